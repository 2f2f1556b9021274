//! Duration syntax: an integer followed by `ms`, `s`, `m`, `h` or `d`.
