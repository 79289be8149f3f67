//! A socket's outgoing packets, on their way to its transport (Switchboard patch).
//!
//! Upstream keeps two channels per socket: a bounded `tokio::sync::mpsc` channel for buffered
//! packets and a `tokio::sync::watch` channel for the latest volatile group. Each is a separate
//! allocation (the mpsc channel also allocates its first block of 32 slots up front), ≈ 1.1 KB per
//! socket, for a queue that is empty almost all its life. [`PacketQueue`] is both in one
//! structure held inline in the socket: one lock around a `VecDeque` that allocates on the
//! first packet, the volatile slot, and the consumer's waker.
//!
//! Semantics are the channels': a bounded buffer whose capacity counts reserved permits, sends
//! that fail when it is full or closed, a volatile slot that keeps only the latest group and
//! is written after the buffered packets, and a close after which the consumer still gets what
//! was queued before it.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use tokio::sync::{Notify, mpsc::error::TrySendError};

use crate::socket::QueuedPackets;

/// The outgoing packets of one socket: many producers, one consumer (the transport holding the
/// socket's `internal_rx` lock).
pub(crate) struct PacketQueue {
    state: Mutex<QueueState>,
    /// How many packet groups the buffer holds, reserved permits included.
    capacity: usize,
    /// Woken when the queue is closed, for [`PacketQueue::closed`].
    closing: Notify,
}

#[derive(Default)]
struct QueueState {
    buffered: VecDeque<QueuedPackets>,
    /// Permits handed out and not yet used or dropped.
    reserved: usize,
    /// The latest volatile group, written once the buffer is empty.
    volatile: Option<QueuedPackets>,
    closed: bool,
    /// The consumer waiting for a packet.
    consumer: Option<Waker>,
}

impl PacketQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            capacity,
            closing: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // No code panics while holding the lock; a poisoned lock still holds a consistent queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `packets` if the buffer has room.
    pub(crate) fn try_send(
        &self,
        packets: QueuedPackets,
    ) -> Result<(), TrySendError<QueuedPackets>> {
        let state = self.lock();
        match state.room_for_one(self.capacity) {
            Ok(()) => push(state, packets),
            Err(TrySendError::Full(())) => return Err(TrySendError::Full(packets)),
            Err(TrySendError::Closed(())) => return Err(TrySendError::Closed(packets)),
        }
        Ok(())
    }

    /// Queues `packets` whether or not the buffer has room: for the transport's own control
    /// packets, which must not wait behind a full buffer. Dropped if the queue is closed.
    pub(crate) fn send_control(&self, packets: QueuedPackets) -> Result<(), QueuedPackets> {
        let state = self.lock();
        if state.closed {
            return Err(packets);
        }
        push(state, packets);
        Ok(())
    }

    /// Holds a place in the buffer for one group, sent later with [`PacketQueue::send_reserved`]
    /// or given back with [`PacketQueue::release`].
    pub(crate) fn try_reserve(&self) -> Result<(), TrySendError<()>> {
        let mut state = self.lock();
        state.room_for_one(self.capacity)?;
        state.reserved += 1;
        Ok(())
    }

    /// Queues `packets` in a place reserved earlier. Dropped if the queue was closed meanwhile,
    /// as a channel permit's value is once its receiver is gone.
    pub(crate) fn send_reserved(&self, packets: QueuedPackets) {
        let mut state = self.lock();
        state.reserved -= 1;
        if !state.closed {
            push(state, packets);
        }
    }

    /// Gives back a place reserved earlier and not used.
    pub(crate) fn release(&self) {
        self.lock().reserved -= 1;
    }

    /// Replaces the volatile group; `false` if the queue is closed.
    pub(crate) fn send_volatile(&self, packets: QueuedPackets) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        state.volatile = Some(packets);
        wake_consumer(state);
        true
    }

    /// The next group for the transport: buffered groups first, then the volatile one. `None`
    /// once the queue is closed and nothing is left before the close.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<QueuedPackets>> {
        let mut state = self.lock();
        if let Some(packets) = state.buffered.pop_front() {
            return Poll::Ready(Some(packets));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        if let Some(packets) = state.volatile.take() {
            return Poll::Ready(Some(packets));
        }
        match &mut state.consumer {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Closes the queue: no more sends; the consumer still gets what was queued before.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.volatile = None;
        wake_consumer(state);
        self.closing.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Resolves once the queue is closed.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.closing.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

impl QueueState {
    /// Whether one more group fits: the queue is open and, counting reserved places, under
    /// `capacity`.
    fn room_for_one(&self, capacity: usize) -> Result<(), TrySendError<()>> {
        if self.closed {
            Err(TrySendError::Closed(()))
        } else if self.buffered.len() + self.reserved >= capacity {
            Err(TrySendError::Full(()))
        } else {
            Ok(())
        }
    }
}

/// Queues `packets` behind the others and wakes the consumer.
fn push(mut state: MutexGuard<'_, QueueState>, packets: QueuedPackets) {
    state.buffered.push_back(packets);
    wake_consumer(state);
}

/// Wakes the consumer, after the lock is released (the woken task may take it at once).
fn wake_consumer(mut state: MutexGuard<'_, QueueState>) {
    let waker = state.consumer.take();
    drop(state);
    if let Some(waker) = waker {
        waker.wake();
    }
}

impl std::fmt::Debug for PacketQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("PacketQueue")
            .field("buffered", &state.buffered.len())
            .field("reserved", &state.reserved)
            .field("volatile", &state.volatile.is_some())
            .field("closed", &state.closed)
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        future::poll_fn,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::Wake,
    };

    use engineioxide_core::{Packet, PacketBuf, Str};
    use smallvec::smallvec;

    use super::*;

    fn group(msg: &str) -> QueuedPackets {
        Box::new(smallvec![Packet::Message(Str::from(msg.to_string()))])
    }

    fn message(packets: &PacketBuf) -> String {
        match packets.first() {
            Some(Packet::Message(msg)) => msg.to_string(),
            other => panic!("not a message: {other:?}"),
        }
    }

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn capacity_counts_queued_groups_and_reserved_places() {
        let queue = PacketQueue::new(2);
        queue.try_send(group("a")).unwrap();
        queue.try_reserve().unwrap();
        assert!(matches!(
            queue.try_send(group("b")),
            Err(TrySendError::Full(_))
        ));
        assert!(matches!(queue.try_reserve(), Err(TrySendError::Full(()))));
        queue.release();
        queue.try_send(group("b")).unwrap();
        // A control packet does not wait for room.
        queue.send_control(group("c")).unwrap();
    }

    #[tokio::test]
    async fn buffered_groups_come_in_order_then_the_latest_volatile_one() {
        let queue = PacketQueue::new(8);
        queue.send_volatile(group("v1"));
        queue.try_send(group("a")).unwrap();
        queue.try_reserve().unwrap();
        queue.send_volatile(group("v2"));
        queue.send_reserved(group("b"));
        let mut received = Vec::new();
        for _ in 0..3 {
            received.push(message(&poll_fn(|cx| queue.poll_recv(cx)).await.unwrap()));
        }
        assert_eq!(received, ["a", "b", "v2"]);
        let pending = poll_fn(|cx| Poll::Ready(queue.poll_recv(cx).is_pending())).await;
        assert!(pending, "nothing should be left");
    }

    #[test]
    fn a_send_wakes_the_waiting_consumer() {
        let queue = PacketQueue::new(8);
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(queue.poll_recv(&mut cx).is_pending());
        queue.try_send(group("a")).unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(queue.poll_recv(&mut cx).is_ready());
        assert!(queue.poll_recv(&mut cx).is_pending());
        queue.send_volatile(group("v"));
        assert_eq!(counter.0.load(Ordering::SeqCst), 2);
        assert!(queue.poll_recv(&mut cx).is_ready());
        assert!(queue.poll_recv(&mut cx).is_pending());
        queue.close();
        assert_eq!(counter.0.load(Ordering::SeqCst), 3);
        assert!(matches!(queue.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[tokio::test]
    async fn after_close_the_consumer_gets_what_was_queued_then_none() {
        let queue = Arc::new(PacketQueue::new(8));
        queue.try_send(group("a")).unwrap();
        queue.try_reserve().unwrap();
        queue.send_volatile(group("v"));
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.closed().await }
        });
        queue.close();
        waiter.await.unwrap();
        assert!(queue.is_closed());
        assert!(matches!(
            queue.try_send(group("b")),
            Err(TrySendError::Closed(_))
        ));
        assert!(matches!(queue.try_reserve(), Err(TrySendError::Closed(()))));
        assert!(!queue.send_volatile(group("v2")));
        // A permit used after the close is dropped.
        queue.send_reserved(group("late"));
        assert_eq!(
            message(&poll_fn(|cx| queue.poll_recv(cx)).await.unwrap()),
            "a"
        );
        assert!(poll_fn(|cx| queue.poll_recv(cx)).await.is_none());
    }
}
