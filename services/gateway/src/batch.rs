//! Taking what queued on a channel as one batch, within a count and a byte limit: the send
//! forwarder's calls and the delivery log's appends.

use tokio::sync::mpsc;

/// The next item: the one held back from the last batch, else the next to arrive (`None`: the
/// channel is closed).
pub(crate) async fn first<T>(held_back: &mut Option<T>, rx: &mut mpsc::Receiver<T>) -> Option<T> {
    match held_back.take() {
        Some(item) => Some(item),
        None => rx.recv().await,
    }
}

/// `first` and what queued behind it, at most `max_items`, and at most `max_bytes` (as `size`
/// counts them) unless `first` alone is larger; an item that would take the batch over is handed
/// back, to lead the next one.
pub(crate) fn gather<T>(
    first: T,
    rx: &mut mpsc::Receiver<T>,
    max_items: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> (Vec<T>, Option<T>) {
    let mut bytes = size(&first);
    let mut batch = vec![first];
    while batch.len() < max_items {
        let Ok(item) = rx.try_recv() else {
            break;
        };
        bytes += size(&item);
        if bytes > max_bytes {
            return (batch, Some(item));
        }
        batch.push(item);
    }
    (batch, None)
}
