//! Realm configuration.
