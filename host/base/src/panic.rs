//! Panics the node can survive: [`contain`] runs library code whose panic is recoverable,
//! and [`contained`] tells the process's panic hook (fulgurd's `lifecycle.rs`) that the
//! panic in progress is one of those, so that it logs it instead of stopping the process.

use std::cell::Cell;

thread_local! {
    static CONTAINED: Cell<u32> = const { Cell::new(0) };
}

/// A panic that [`contain`] caught (the panic hook logged it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panicked;

/// Runs `f`, turning a panic inside it into `Err(Panicked)` instead of stopping the node. Only
/// for calls into library code whose failure we can recover from (LDK's fee-bump handler);
/// the panic is still logged as `**BROKEN**`.
pub fn contain<R>(f: impl FnOnce() -> R) -> Result<R, Panicked> {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            CONTAINED.with(|c| c.set(c.get().saturating_sub(1)));
        }
    }
    CONTAINED.with(|c| c.set(c.get().saturating_add(1)));
    let _guard = Guard;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| Panicked)
}

/// Whether this thread is inside [`contain`].
pub fn contained() -> bool {
    CONTAINED.with(|c| c.get() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contained_panics_unwind_to_the_caller() {
        assert_eq!(contain(|| 5), Ok(5));
        assert_eq!(contain(|| -> u8 { panic!("boom") }), Err(Panicked));
        assert!(!contained());
    }
}
