//! What the commands print on stdout, written so that a reader that goes away early (`queue
//! list | head`) ends the command quietly instead of panicking.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with `BrokenPipe`, and `println!`
//! turns that failure into a panic (exit 101). [`line()`] (through [`outln!`](crate::outln)) exits with 0
//! instead, as `grep` or `rg` end when their reader is gone; any other write failure (a full
//! disk behind a redirection) is reported on stderr with exit 1.

use std::fmt;
use std::io::{self, Write};

/// Exit code when stdout could not be written for another reason than a closed pipe.
const WRITE_FAILED: i32 = 1;

/// Print one line on stdout; see the module docs for what happens when that fails.
pub fn line(args: fmt::Arguments<'_>) {
    let written = {
        let mut out = io::stdout().lock();
        out.write_fmt(args).and_then(|()| out.write_all(b"\n"))
    };
    if let Err(error) = written {
        end_on_write_error(&error);
    }
}

/// End the process after stdout failed: quietly with 0 when the reader went away.
pub fn end_on_write_error(error: &io::Error) -> ! {
    if error.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("cannot write to stdout: {error}");
    std::process::exit(WRITE_FAILED);
}

/// `println!` for command output: a closed stdout ends the command quietly (see
/// [`line`](crate::cli::output::line)).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::cli::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}
