//! A thread-local fake kernel for unit tests of error paths.
//!
//! `with_fake(f, || ...)` runs the closure with `f` answering every [`Syscall`]: `f`
//! returns `Some(result)` to answer, or `None` to let the real kernel answer.

use super::Syscall;
use std::cell::RefCell;
use std::io;

type Answer = Box<dyn FnMut(&Syscall<'_>) -> Option<io::Result<i64>>>;

thread_local! {
    static FAKE: RefCell<Option<Answer>> = const { RefCell::new(None) };
}

/// Runs `body` with `fake` answering syscalls on this thread.
pub fn with_fake<R>(
    fake: impl FnMut(&Syscall<'_>) -> Option<io::Result<i64>> + 'static,
    body: impl FnOnce() -> R,
) -> R {
    FAKE.with(|f| *f.borrow_mut() = Some(Box::new(fake)));
    let r = body();
    FAKE.with(|f| *f.borrow_mut() = None);
    r
}

pub(super) fn answer(call: &Syscall<'_>) -> Option<io::Result<i64>> {
    FAKE.with(|f| f.borrow_mut().as_mut().and_then(|fake| fake(call)))
}

/// An errno as an `io::Error`.
pub fn errno(e: i32) -> io::Result<i64> {
    Err(io::Error::from_raw_os_error(e))
}
