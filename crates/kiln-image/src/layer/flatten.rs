//! Flattening (`kiln export`, squash): apply layers oldest first, then
//! write one tar of the final filesystem.
