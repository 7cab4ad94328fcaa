//! Standard output that a closed pipe cannot crash: `reporunner runs logs ID
//! | head -3` ends quietly (exit 0) instead of panicking, and an embedded
//! run whose output goes away is stopped like any other error stops it.
//!
//! Every command prints with [`outln!`](crate::outln) and
//! [`out!`](crate::out), which return a [`StdoutError`] to pass up with `?`.

use std::io::Write as _;

/// Writing to standard output failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output: {0}")]
pub struct StdoutError(#[from] pub std::io::Error);

impl StdoutError {
    /// The reader went away (a pipe closed): not worth an error message.
    pub fn is_closed(&self) -> bool {
        self.0.kind() == std::io::ErrorKind::BrokenPipe
    }
}

/// Writes `args` to standard output.
pub fn write(args: std::fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_fmt(args)?;
    Ok(())
}

/// `println!` that answers a [`StdoutError`] instead of panicking.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::stdout::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that answers a [`StdoutError`] instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_told_apart_from_other_failures() {
        let closed = StdoutError(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(closed.is_closed());
        let full = StdoutError(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(!full.is_closed());
    }
}
