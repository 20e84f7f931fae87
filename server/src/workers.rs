//! The query worker pool: a fixed set of OS threads behind a bounded queue.
//!
//! Every query runs here, never on the async reactor. A handler submits a job and awaits its
//! answer; when the queue is full, [`Workers::submit`] fails at once (the service answers
//! `RESOURCE_EXHAUSTED`) instead of letting latency grow without bound. Each job carries a
//! [`Cancel`] flag that its handler raises when the caller stops waiting (deadline passed,
//! client gone): a job still queued is then skipped, and a running query stops at its next
//! check (see `tandem_engine::Index::search_cancellable`).

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// A job: runs on a worker thread with its cancel flag.
type Job = Box<dyn FnOnce(&AtomicBool) + Send>;

/// A cancellation flag shared by a handler and its job. Raised on drop, so a handler future
/// dropped by a deadline or a vanished client cancels its work.
#[derive(Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Raises the flag.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Why a job could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The queue holds `capacity` jobs already.
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The pool is shutting down.
    Closed,
}

/// A fixed pool of worker threads and the bounded queue in front of them.
pub struct Workers {
    queue: Option<Sender<(Job, Arc<AtomicBool>)>>,
    capacity: usize,
    threads: Vec<JoinHandle<()>>,
    busy: Arc<AtomicUsize>,
}

impl Workers {
    /// Starts `threads` workers (at least 1) behind a queue of `capacity` jobs (at least 1).
    pub fn new(threads: usize, capacity: usize) -> std::io::Result<Workers> {
        let capacity = capacity.max(1);
        let (queue, jobs) = bounded::<(Job, Arc<AtomicBool>)>(capacity);
        let busy = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (jobs, busy) = (jobs.clone(), busy.clone());
            let handle = std::thread::Builder::new()
                .name(format!("tandem-worker-{i}"))
                .spawn(move || work(&jobs, &busy))?;
            handles.push(handle);
        }
        Ok(Workers {
            queue: Some(queue),
            capacity,
            threads: handles,
            busy,
        })
    }

    /// Queues `job`; its return value arrives on the receiver. The job is skipped (and the
    /// receiver closed) if `cancel` is raised before a worker takes it.
    pub fn submit<T: Send + 'static>(
        &self,
        cancel: &Cancel,
        job: impl FnOnce(&AtomicBool) -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, Rejected> {
        let queue = self.queue.as_ref().ok_or(Rejected::Closed)?;
        let (answer, receiver) = oneshot::channel();
        let job: Job = Box::new(move |cancelled| {
            let _ = answer.send(job(cancelled));
        });
        match queue.try_send((job, cancel.0.clone())) {
            Ok(()) => Ok(receiver),
            Err(TrySendError::Full(_)) => Err(Rejected::QueueFull {
                capacity: self.capacity,
            }),
            Err(TrySendError::Disconnected(_)) => Err(Rejected::Closed),
        }
    }

    /// Jobs waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.as_ref().map_or(0, Sender::len)
    }

    /// Jobs being run right now.
    pub fn running(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Drop for Workers {
    /// Closes the queue and waits for the workers to finish the jobs already queued.
    fn drop(&mut self) {
        self.queue = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A worker's loop: take jobs until the queue is closed and empty.
fn work(jobs: &Receiver<(Job, Arc<AtomicBool>)>, busy: &AtomicUsize) {
    for (job, cancelled) in jobs {
        if cancelled.load(Ordering::Relaxed) {
            // Dropping the job drops its answer sender: the (gone) handler sees a closed channel.
            continue;
        }
        busy.fetch_add(1, Ordering::Relaxed);
        job(&cancelled);
        busy.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[tokio::test]
    async fn jobs_run_and_answer() {
        let workers = Workers::new(2, 4).unwrap();
        let cancel = Cancel::default();
        let answers: Vec<_> = (0..4)
            .map(|i| workers.submit(&cancel, move |_| i * 10).unwrap())
            .collect();
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.await.unwrap(), i * 10);
        }
        assert_eq!(workers.threads(), 2);
    }

    #[tokio::test]
    async fn a_full_queue_rejects_at_once() {
        let workers = Workers::new(1, 2).unwrap();
        let cancel = Cancel::default();
        // Block the only worker until released.
        let (release, gate) = mpsc::channel::<()>();
        let (started, running) = mpsc::channel::<()>();
        let blocker = workers
            .submit(&cancel, move |_| {
                let _ = started.send(());
                let _ = gate.recv();
            })
            .unwrap();
        running.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(workers.running(), 1);
        let queued: Vec<_> = (0..2)
            .map(|i| workers.submit(&cancel, move |_| i).unwrap())
            .collect();
        assert_eq!(workers.queued(), 2);
        assert_eq!(
            workers.submit(&cancel, |_| 0).unwrap_err(),
            Rejected::QueueFull { capacity: 2 }
        );
        release.send(()).unwrap();
        blocker.await.unwrap();
        for (i, q) in queued.into_iter().enumerate() {
            assert_eq!(q.await.unwrap(), i);
        }
    }

    #[tokio::test]
    async fn cancelled_jobs_are_skipped_and_running_ones_see_the_flag() {
        let workers = Workers::new(1, 4).unwrap();
        let (release, gate) = mpsc::channel::<()>();
        let (started, running) = mpsc::channel::<()>();
        let first = Cancel::default();
        let seen = workers
            .submit(&first, move |cancelled| {
                let _ = started.send(());
                let _ = gate.recv();
                cancelled.load(Ordering::Relaxed)
            })
            .unwrap();
        running.recv_timeout(Duration::from_secs(10)).unwrap();
        let second = Cancel::default();
        let skipped = workers.submit(&second, |_| "ran").unwrap();
        drop(second);
        first.cancel();
        release.send(()).unwrap();
        assert!(seen.await.unwrap(), "the running job sees its flag");
        assert!(skipped.await.is_err(), "the queued job was skipped");
    }
}
