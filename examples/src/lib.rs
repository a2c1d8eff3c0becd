//! Examples of embedded prr.
