//! Live progress for `wait`, `add --wait` and `watch`.
//!
//! When stdout is a terminal, each running job gets an indicatif bar (file name, bytes / total,
//! speed and ETA as the daemon reports them) in one [`MultiProgress`], and state changes are
//! printed as lines above the bars. Otherwise the same state changes are printed as plain lines,
//! and in follow mode (`watch`) also throttled progress lines. `NO_COLOR` turns colours off.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mdl_protocol::{Event, JobId, JobInfo, JobState, Progress};

use super::{emit, event_line, file_name, format_duration, format_rate, job_line};

/// How often a plain progress line may be printed per job.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// True when colours may be used: `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn colors_allowed() -> bool {
    std::env::var_os("NO_COLOR")
        .filter(|v| !v.is_empty())
        .is_none()
}

/// The live display of job events.
pub struct Live {
    /// Progress bars, when stdout is a terminal.
    bars: Option<Bars>,
    /// Follow mode (`watch`): print the snapshot's unfinished jobs, updates, lags and (in
    /// plain mode) progress lines. Otherwise (`wait`) print the snapshot's finished jobs.
    follow: bool,
    /// When a plain progress line was last printed, per job.
    last_plain_progress: HashMap<JobId, Instant>,
}

/// The bars of running jobs.
struct Bars {
    multi: MultiProgress,
    by_job: HashMap<JobId, JobBar>,
    color: bool,
}

/// One job's bar, and whether it currently shows a known total.
struct JobBar {
    bar: ProgressBar,
    has_total: bool,
}

impl Live {
    /// A display with bars when stdout is a terminal, plain lines otherwise.
    pub fn new(follow: bool) -> Self {
        let bars = std::io::stdout().is_terminal().then(|| Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            by_job: HashMap::new(),
            color: colors_allowed(),
        });
        Live {
            bars,
            follow,
            last_plain_progress: HashMap::new(),
        }
    }

    /// Show the jobs of a snapshot (or of a re-read after falling behind).
    pub fn snapshot<'a>(&mut self, jobs: impl IntoIterator<Item = &'a JobInfo>) -> Result<()> {
        for job in jobs {
            match (&mut self.bars, job.state) {
                (Some(bars), JobState::Running | JobState::Verifying) => {
                    let bar = bars.bar(job.id, job.bytes_total);
                    bar.bar.set_position(job.bytes_done);
                }
                (Some(bars), state) if state.is_finished() || state == JobState::Paused => {
                    bars.close(job.id);
                }
                _ => {}
            }
            // Following: what is going on now. Waiting: jobs that finished before we looked
            // (later ones are announced by their events).
            if self.follow != job.state.is_finished() {
                self.line(job_line(job))?;
            }
        }
        Ok(())
    }

    /// Show one event.
    pub fn event(&mut self, event: &Event) -> Result<()> {
        if let Some(bars) = &mut self.bars {
            match event {
                Event::Progress(p) => {
                    bars.progress(p);
                    return Ok(());
                }
                Event::Started(job) => {
                    bars.bar(job.id, job.bytes_total)
                        .bar
                        .set_position(job.bytes_done);
                }
                Event::Verifying { job, file } => {
                    if let Some(bar) = bars.by_job.get(job) {
                        bar.bar
                            .set_message(format!("verifying {}", file_name(file)));
                    }
                    return Ok(());
                }
                Event::Updated(job) => {
                    if let (Some(bar), Some(total)) =
                        (bars.by_job.get_mut(&job.id), job.bytes_total)
                    {
                        bar.set_total(total, bars.color);
                    }
                }
                Event::Completed(job)
                | Event::Failed(job)
                | Event::Paused(job)
                | Event::Cancelled(job) => bars.close(job.id),
                Event::Removed(id) => bars.close(*id),
                _ => {}
            }
        }
        let wanted = match event {
            Event::Progress(p) => self.follow && self.bars.is_none() && self.plain_progress_due(p),
            Event::Updated(_) | Event::Lagged { .. } => self.follow,
            _ => true,
        };
        match event_line(event) {
            Some(line) if wanted => self.line(line),
            _ => Ok(()),
        }
    }

    /// Print a line: above the bars on a terminal, on stdout otherwise.
    pub fn line(&self, text: impl AsRef<str>) -> Result<()> {
        match &self.bars {
            Some(bars) => bars.multi.println(text).context("writing to stdout"),
            None => emit(text.as_ref()),
        }
    }

    /// Remove every bar (before the final output).
    pub fn finish(&mut self) {
        if let Some(bars) = &mut self.bars {
            let ids: Vec<JobId> = bars.by_job.keys().copied().collect();
            for id in ids {
                bars.close(id);
            }
        }
    }

    /// True (and remembered) when a plain progress line for this job may be printed now.
    fn plain_progress_due(&mut self, p: &Progress) -> bool {
        let now = Instant::now();
        let due = match self.last_plain_progress.get(&p.job) {
            Some(last) => now.duration_since(*last) >= PLAIN_PROGRESS_EVERY,
            None => true,
        };
        if due {
            self.last_plain_progress.insert(p.job, now);
        }
        due
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Bars {
    /// The job's bar, created if missing.
    fn bar(&mut self, job: JobId, total: Option<u64>) -> &mut JobBar {
        let (multi, color) = (&self.multi, self.color);
        let bar = self.by_job.entry(job).or_insert_with(|| {
            // Styled before it is added, so that no frame is drawn in the default style.
            let bar = ProgressBar::new(0)
                .with_style(style(false, color))
                .with_prefix(format!("job {job}"));
            let bar = multi.add(bar);
            JobBar {
                bar,
                has_total: false,
            }
        });
        if let Some(total) = total {
            bar.set_total(total, color);
        }
        bar
    }

    /// Apply a progress update.
    fn progress(&mut self, p: &Progress) {
        let color = self.color;
        let bar = self.bar(p.job, p.job_bytes_total);
        if p.job_bytes_total.is_none() && bar.has_total {
            bar.bar.unset_length();
            bar.bar.set_style(style(false, color));
            bar.has_total = false;
        }
        bar.bar.set_position(p.job_bytes_done);
        let mut message = String::new();
        if p.bytes_per_second > 0 {
            message.push_str(&format_rate(p.bytes_per_second));
            message.push(' ');
        }
        if let Some(eta) = p.eta_seconds {
            message.push_str(&format!("eta {} ", format_duration(eta)));
        }
        message.push_str(file_name(&p.file));
        bar.bar.set_message(message);
    }

    /// Remove a job's bar, if it has one.
    fn close(&mut self, job: JobId) {
        if let Some(bar) = self.by_job.remove(&job) {
            bar.bar.finish_and_clear();
            self.multi.remove(&bar.bar);
        }
    }
}

impl JobBar {
    /// Show a known total.
    fn set_total(&mut self, total: u64, color: bool) {
        self.bar.set_length(total);
        if !self.has_total {
            self.bar.set_style(style(true, color));
            self.has_total = true;
        }
    }
}

/// The bar style: a bar with percentage when the total is known, a spinner otherwise.
fn style(known_total: bool, color: bool) -> ProgressStyle {
    // About 55 columns before the message, so speed, ETA and file name fit in 80.
    let template = match (known_total, color) {
        (true, true) => {
            "{prefix:>7.bold} [{bar:20.cyan/blue}] {percent:>3}% \
             {binary_bytes:>9}/{binary_total_bytes:<9} {wide_msg}"
        }
        (true, false) => {
            "{prefix:>7} [{bar:20}] {percent:>3}% {binary_bytes:>9}/{binary_total_bytes:<9} \
             {wide_msg}"
        }
        (false, true) => "{prefix:>7.bold} {spinner:.cyan} {binary_bytes:>9} {wide_msg}",
        (false, false) => "{prefix:>7} {spinner} {binary_bytes:>9} {wide_msg}",
    };
    ProgressStyle::with_template(template)
        .expect("progress templates are valid")
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        for known in [true, false] {
            for color in [true, false] {
                let _ = style(known, color);
            }
        }
    }
}
