//! A terminal progress bar for builds (hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;
use tandem_engine::build::Progress;

/// Shows one bar per build stage.
pub struct Bar {
    current: Mutex<Option<ProgressBar>>,
}

impl Bar {
    /// A bar that draws nothing until a stage starts.
    pub fn new() -> Bar {
        Bar {
            current: Mutex::new(None),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        // A poisoned lock only means another thread panicked while drawing; keep drawing.
        let mut guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }
}

impl Progress for Bar {
    fn start(&self, stage: &str, total: u64) {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:24} [{bar:40}] {percent:>3}% {elapsed_precise} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(stage.to_string());
        self.with_bar(|current| *current = Some(bar));
    }

    fn advance(&self, units: u64) {
        self.with_bar(|current| {
            if let Some(bar) = current {
                bar.inc(units);
            }
        });
    }

    fn finish(&self) {
        self.with_bar(|current| {
            if let Some(bar) = current.take() {
                bar.finish();
            }
        });
    }
}
