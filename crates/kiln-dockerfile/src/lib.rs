//! Pure, I/O-free Dockerfile frontend: parsing, word splitting, variable
//! expansion, ARG/ENV scoping, the stage model and `.dockerignore` matching.
//! It never touches the filesystem or runs anything.
