//! Placeholder replaced by the SDK.
