//! Safe extraction.
