//! Progress bars on stderr: drawn only on a terminal and without `-q`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Inputs smaller than this finish before a bar would tell anyone anything.
pub const LARGE: u64 = 8 << 20;

/// A byte-count bar (`total` known) or spinner (`None`), hidden unless `shown` and the total
/// (when known) is [`LARGE`].
pub fn bytes(shown: bool, total: Option<u64>, what: &str) -> ProgressBar {
    if !shown || total.is_some_and(|t| t < LARGE) {
        return ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
    }
    let bar = match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.set_message(what.to_owned());
    bar
}
