//! How the CLI talks to the person at the terminal: how much it says
//! (`-q`, `-v`) and whether it colours (`--color`, `NO_COLOR`). Set once by
//! `main` from the global flags; everything that prints reads it.

use std::{io::IsTerminal as _, sync::OnceLock};

use clap::ValueEnum;

/// `--color`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set (to anything but empty) or
    /// `TERM` is `dumb`.
    #[default]
    Auto,
    Always,
    Never,
}

/// The global output settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ui {
    /// `-q`: results and errors only.
    pub quiet: bool,
    /// `-v` counted.
    pub verbose: u8,
    /// Colour on standard error (progress) and standard output.
    pub color: bool,
}

static UI: OnceLock<Ui> = OnceLock::new();

impl Ui {
    /// The settings for these flags and this environment.
    pub fn new(quiet: bool, verbose: u8, color: ColorChoice) -> Self {
        let color = match color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
                let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
                !no_color && !dumb && std::io::stderr().is_terminal()
            }
        };
        Self {
            quiet,
            verbose,
            color,
        }
    }

    /// Makes these the settings of the process (once; later calls are
    /// ignored) and tells the terminal styling about the colour choice.
    pub fn install(self) {
        console::set_colors_enabled(self.color);
        console::set_colors_enabled_stderr(self.color);
        let _ = UI.set(self);
    }

    /// The level the embedded services log at on standard error.
    pub fn log_level(&self) -> &'static str {
        match self.verbose {
            0 => "error",
            1 => "info",
            _ => "debug",
        }
    }
}

/// The process's settings (the defaults until `main` installs them).
pub fn get() -> Ui {
    UI.get().copied().unwrap_or_default()
}

/// `$XDG_CONFIG_HOME/reporunner/config.toml` (else
/// `~/.config/reporunner/config.toml`) when that file exists.
pub fn discovered_config() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".config")))?;
    let path = base.join("reporunner").join("config.toml");
    path.is_file().then_some(path)
}

/// `text` in green when colouring.
pub fn good(text: &str) -> String {
    console::style(text).green().to_string()
}

/// `text` in red when colouring.
pub fn bad(text: &str) -> String {
    console::style(text).red().to_string()
}

/// `text` dimmed when colouring.
pub fn dim(text: &str) -> String {
    console::style(text).dim().to_string()
}

/// `text` in bold when colouring.
pub fn bold(text: &str) -> String {
    console::style(text).bold().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_and_always_decide_alone() {
        assert!(!Ui::new(false, 0, ColorChoice::Never).color);
        assert!(Ui::new(false, 0, ColorChoice::Always).color);
        assert_eq!(Ui::new(false, 2, ColorChoice::Never).log_level(), "debug");
        assert_eq!(Ui::new(true, 0, ColorChoice::Never).log_level(), "error");
    }
}
