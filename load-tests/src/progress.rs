//! Progress display on stderr for long phases (hidden when stderr is not a terminal, where a
//! line per phase is logged instead).

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(what: &str, len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>14} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec}",
        )
        .expect("progress template"),
    );
    bar.set_message(what.to_string());
    bar
}

/// A timed phase with a spinner-like bar over its seconds.
pub fn timed(what: &str, seconds: u64) -> ProgressBar {
    let bar = ProgressBar::new(seconds);
    bar.set_style(
        ProgressStyle::with_template("{msg:>14} [{elapsed_precise}] {wide_bar} {pos}/{len}s")
            .expect("progress template"),
    );
    bar.set_message(what.to_string());
    bar
}

/// One line on stderr, prefixed like the shell scripts' logs.
pub fn log(line: impl AsRef<str>) {
    eprintln!("[sb-load] {}", line.as_ref());
}
