//! Writing to the terminal without ever panicking: `println!` and `eprintln!` panic
//! when the reader is gone (`lockgate checkpoint inspect DIR | head`). Here a closed
//! stdout ends the output quietly (what follows is not written; the command still
//! finishes and exits with its status), and a closed stderr is ignored.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to stdout failed: the reader is gone.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// Writes a line to stdout unless its reader is gone.
pub fn out_line(args: std::fmt::Arguments<'_>) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if writeln!(o, "{args}").and_then(|()| o.flush()).is_err() {
        STDOUT_GONE.store(true, Ordering::Relaxed);
    }
}

/// Writes a line to stderr; a closed stderr is ignored.
pub fn err_line(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// `println!` that never panics (see the [module](self)).
macro_rules! outln {
    ($($t:tt)*) => { $crate::term::out_line(format_args!($($t)*)) };
}

/// `eprintln!` that never panics (see the [module](self)).
macro_rules! say {
    ($($t:tt)*) => { $crate::term::err_line(format_args!($($t)*)) };
}

pub(crate) use {outln, say};
