//! Snapshots (todo)
