//! Switchboard patch: the socket's "being closed" signal, inline in the socket.
//!
//! tokio-util's `CancellationToken` is a pointer to a shared, separately allocated tree node
//! (parent, children, waiters), built for tokens that fan out to child tokens. A socket's token
//! never has children, and every holder already holds the socket, so a flag and a [`Notify`]
//! beside the socket's other fields do the same without an allocation per connection.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Cancel {
    cancelled: AtomicBool,
    notify: Notify,
}

impl Cancel {
    /// Marks the socket as being closed and wakes everything waiting for it. Idempotent.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Resolves once [`Cancel::cancel`] has been called (at once if it already has).
    pub(crate) async fn cancelled(&self) {
        loop {
            // Created before the flag is read: a `notify_waiters` after this line reaches it.
            let notified = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Runs `fut` until it completes (`Some`) or the socket is being closed (`None`). `fut` is
    /// polled first, so an output ready at the same time as the cancellation is kept, as
    /// tokio-util's `with_cancellation_token` does.
    pub(crate) async fn run_until_cancelled<F: Future>(&self, fut: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = fut => Some(out),
            () = self.cancelled() => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn waiters_before_and_after_the_cancel_are_released() {
        let cancel = Arc::new(Cancel::default());
        assert!(!cancel.is_cancelled());
        let waiting = tokio::spawn({
            let cancel = cancel.clone();
            async move { cancel.cancelled().await }
        });
        let pending = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                cancel
                    .run_until_cancelled(std::future::pending::<()>())
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a waiter is woken")
            .unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("a run is cut short")
            .unwrap();
        assert_eq!(outcome, None);
        // After the cancel: at once.
        cancel.cancelled().await;
        cancel.cancel();
        assert!(cancel.is_cancelled());
    }

    #[tokio::test]
    async fn a_ready_output_wins_over_the_cancel() {
        let cancel = Cancel::default();
        cancel.cancel();
        assert_eq!(cancel.run_until_cancelled(async { 7 }).await, Some(7));
    }
}
