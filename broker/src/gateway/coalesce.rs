//! Gathers the small frames of an upstream's answer so that they reach the client's socket in
//! large writes, without ever waiting for data that is not there yet.
//!
//! Why: a Git server behind nginx answers a clone in the chunks nginx relays unbuffered from
//! FastCGI, ~4 KB each. The HTTP client reads the upstream's socket in large reads (~100–300
//! KB), but decodes each chunk into its own frame and hands the frames over from its connection
//! task one at a time (a one-slot channel). The server wrote each frame as soon as it had it:
//! a 220 MB pack cost the broker ~51,000 `writev` calls to git's socket (and as many wake-ups
//! of the reading git), which was most of the gateway's CPU and of its extra time over a
//! direct clone. (An RPC of known length to an `http://` upstream now goes on a connection of
//! the gateway's own, [`super::http10`], whose frames are single reads of an unframed answer,
//! up to 128 KiB; they are gathered the same way when they come in small.)
//!
//! How: after taking a frame, [`Coalesced`] gives the producer a turn of the scheduler
//! (`tokio::task::yield_now`, no timer) and takes what it then hands over, up to
//! [`GATHER_LIMIT`] bytes; when [`TURNS`] turns in a row bring nothing, or the limit is reached,
//! or the body ends, it hands the gathered frames on, uncopied, all ready at once, and the
//! HTTP server writes them in one `writev` (hyper queues up to 16 frames per write). Data that
//! is not already on its way is never waited for: a lone pkt-line (progress, a keep-alive, the
//! end of a pack) goes out a few scheduler turns after it arrived. Back-pressure is unchanged:
//! nothing is pulled while the server is not asking, and at most [`GATHER_LIMIT`] bytes (plus
//! one frame) are held.

use std::collections::VecDeque;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use super::body::BodyStream;

/// The most bytes gathered before they are handed on.
pub const GATHER_LIMIT: usize = 128 * 1024;

/// Scheduler turns given to the producer, in a row, before what is gathered is handed on.
/// One is often not enough: the producer may be running on the other worker thread.
pub const TURNS: u8 = 3;

/// A body whose frames are gathered while more are immediately ready (see the module docs).
pub struct Coalesced {
    inner: BodyStream,
    /// Frames gathered, uncopied.
    held: VecDeque<Bytes>,
    /// Their bytes.
    held_bytes: usize,
    /// Handing the held frames on (until none is left).
    releasing: bool,
    /// Turns given to the producer since it last handed over a frame.
    turns: u8,
    /// An error of the inner body: handed on after the frames before it.
    error: Option<std::io::Error>,
    /// The inner body ended or failed: it is not polled again.
    done: bool,
    limit: usize,
}

impl Coalesced {
    /// Gathers `inner`'s frames up to [`GATHER_LIMIT`] bytes.
    pub fn new(inner: BodyStream) -> Self {
        Self::with_limit(inner, GATHER_LIMIT)
    }

    /// Gathers `inner`'s frames up to `limit` bytes (at least 1).
    pub fn with_limit(inner: BodyStream, limit: usize) -> Self {
        Self {
            inner,
            held: VecDeque::new(),
            held_bytes: 0,
            releasing: false,
            turns: 0,
            error: None,
            done: false,
            limit: limit.max(1),
        }
    }
}

impl Stream for Coalesced {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.releasing {
                if let Some(frame) = this.held.pop_front() {
                    this.held_bytes -= frame.len();
                    return Poll::Ready(Some(Ok(frame)));
                }
                this.releasing = false;
                if let Some(e) = this.error.take() {
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.turns = 0;
                    if frame.is_empty() {
                        continue;
                    }
                    this.held_bytes += frame.len();
                    this.held.push_back(frame);
                    this.releasing = this.held_bytes >= this.limit;
                }
                Poll::Ready(Some(Err(e))) => {
                    this.error = Some(e);
                    this.done = true;
                    this.releasing = true;
                }
                Poll::Ready(None) => {
                    this.done = true;
                    this.releasing = true;
                }
                Poll::Pending if this.held.is_empty() => return Poll::Pending,
                Poll::Pending if this.turns < TURNS => {
                    // `yield_now` has the runtime poll this task again only after the tasks
                    // already runnable, among them the producer that taking a frame woke.
                    this.turns += 1;
                    let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
                    return Poll::Pending;
                }
                Poll::Pending => {
                    this.turns = 0;
                    this.releasing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::StreamExt as _;
    use futures_util::task::{ArcWake, waker};

    use super::*;

    /// A body that answers each poll with the next scripted step (`None` = not ready yet) and
    /// ends after the last.
    fn scripted(steps: Vec<Option<Result<&'static [u8], &'static str>>>) -> BodyStream {
        let mut steps: VecDeque<_> = steps.into();
        Box::pin(futures_util::stream::poll_fn(move |_| {
            match steps.pop_front() {
                None => Poll::Ready(None),
                Some(None) => Poll::Pending,
                Some(Some(Ok(b))) => Poll::Ready(Some(Ok(Bytes::from_static(b)))),
                Some(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
            }
        }))
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl ArcWake for Wakes {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls `s` once outside a runtime (where `yield_now` wakes the task at once) with a
    /// waker that counts wake-ups; the answer and the wake-ups.
    fn poll(s: &mut Coalesced, wakes: &Arc<Wakes>) -> (Poll<Option<Vec<u8>>>, usize) {
        let w = waker(wakes.clone());
        let mut cx = Context::from_waker(&w);
        let before = wakes.0.load(Ordering::SeqCst);
        let answer = match Pin::new(s).poll_next(&mut cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(b.to_vec())),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(format!("error: {e}").into_bytes())),
        };
        (answer, wakes.0.load(Ordering::SeqCst) - before)
    }

    fn ready(b: &[u8]) -> Poll<Option<Vec<u8>>> {
        Poll::Ready(Some(b.to_vec()))
    }

    #[test]
    fn frames_ready_at_once_are_held_up_to_the_limit_then_handed_on_in_order() {
        let mut s = Coalesced::with_limit(
            scripted(vec![
                Some(Ok(b"0008abc\n")),
                Some(Ok(b"0005x")),
                Some(Ok(b"0005y")),
                Some(Ok(b"0000")),
            ]),
            10,
        );
        let wakes = Arc::new(Wakes::default());
        // 13 bytes gathered: past the limit, handed on without a turn.
        assert_eq!(poll(&mut s, &wakes), (ready(b"0008abc\n"), 0));
        assert_eq!(poll(&mut s, &wakes), (ready(b"0005x"), 0));
        // The end of the body needs no turn either.
        assert_eq!(poll(&mut s, &wakes), (ready(b"0005y"), 0));
        assert_eq!(poll(&mut s, &wakes), (ready(b"0000"), 0));
        assert_eq!(poll(&mut s, &wakes), (Poll::Ready(None), 0));
        assert_eq!(poll(&mut s, &wakes), (Poll::Ready(None), 0));
    }

    #[test]
    fn a_frame_with_nothing_behind_it_waits_a_few_turns_and_no_more() {
        // The upstream sends one progress line and then nothing for a long time.
        let mut script = vec![Some(Ok(&b"0011\x02Counting...\n"[..]))];
        script.extend(std::iter::repeat_n(None, 10));
        let mut s = Coalesced::new(scripted(script));
        let wakes = Arc::new(Wakes::default());
        for _ in 0..TURNS {
            // A turn for the producer: pending, and the task is woken again at once.
            assert_eq!(poll(&mut s, &wakes), (Poll::Pending, 1));
        }
        // The turns brought nothing: the line goes out now.
        assert_eq!(poll(&mut s, &wakes), (ready(b"0011\x02Counting...\n"), 0));
        // Nothing held: plain pending, no self-wake (the producer wakes the task).
        assert_eq!(poll(&mut s, &wakes), (Poll::Pending, 0));
    }

    #[test]
    fn a_turn_that_brings_data_starts_the_count_again() {
        let mut script = vec![Some(Ok(&b"aa"[..])), None, Some(Ok(&b"bb"[..]))];
        script.extend(std::iter::repeat_n(None, usize::from(TURNS)));
        script.push(Some(Ok(&b"cc"[..])));
        let mut s = Coalesced::new(scripted(script));
        let wakes = Arc::new(Wakes::default());
        assert_eq!(poll(&mut s, &wakes), (Poll::Pending, 1));
        for _ in 0..TURNS {
            assert_eq!(poll(&mut s, &wakes), (Poll::Pending, 1));
        }
        assert_eq!(poll(&mut s, &wakes), (ready(b"aa"), 0));
        assert_eq!(poll(&mut s, &wakes), (ready(b"bb"), 0));
        assert_eq!(poll(&mut s, &wakes), (ready(b"cc"), 0));
        assert_eq!(poll(&mut s, &wakes), (Poll::Ready(None), 0));
    }

    #[test]
    fn an_error_comes_after_the_frames_before_it_and_ends_the_body() {
        let mut s = Coalesced::new(scripted(vec![
            Some(Ok(b"abc")),
            Some(Err("upstream reset")),
            Some(Ok(b"never")),
        ]));
        let wakes = Arc::new(Wakes::default());
        assert_eq!(poll(&mut s, &wakes), (ready(b"abc"), 0));
        assert_eq!(poll(&mut s, &wakes), (ready(b"error: upstream reset"), 0));
        assert_eq!(poll(&mut s, &wakes), (Poll::Ready(None), 0));

        let mut s = Coalesced::new(scripted(vec![Some(Err("refused"))]));
        assert_eq!(poll(&mut s, &wakes), (ready(b"error: refused"), 0));
        assert_eq!(poll(&mut s, &wakes), (Poll::Ready(None), 0));
    }

    #[tokio::test]
    async fn frames_are_handed_on_uncopied_and_empty_ones_dropped() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let frames: Vec<Bytes> = data.chunks(4093).map(Bytes::copy_from_slice).collect();
        let pointers: Vec<*const u8> = frames.iter().map(|f| f.as_ptr()).collect();
        let mut with_empty = Vec::new();
        for f in frames {
            with_empty.push(Ok(Bytes::new()));
            with_empty.push(Ok(f));
        }
        let s = Coalesced::new(Box::pin(futures_util::stream::iter(with_empty)));
        let out: Vec<Bytes> = s.map(|f| f.expect("no error")).collect().await;
        assert_eq!(out.iter().map(|f| f.as_ptr()).collect::<Vec<_>>(), pointers);
        assert_eq!(out.concat(), data);
    }

    /// The producer is another task handing frames over one at a time, as the HTTP client's
    /// connection task does: the turns let it run ahead, so frames are gathered.
    #[tokio::test]
    async fn a_producer_task_that_keeps_up_gets_its_frames_gathered() {
        const FRAME: usize = 4096;
        const FRAMES: usize = 100;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let sent = Arc::new(AtomicUsize::new(0));
        let producer = tokio::spawn({
            let sent = sent.clone();
            async move {
                for i in 0..FRAMES {
                    let frame = Bytes::from(vec![u8::try_from(i % 256).unwrap_or(0); FRAME]);
                    if tx.send(frame).await.is_err() {
                        return;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let inner: BodyStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|f| (Ok(f), rx))
        }));
        let mut s = Coalesced::with_limit(inner, 10 * FRAME);
        let first = s.next().await.expect("a frame").expect("no error");
        assert_eq!(first.len(), FRAME);
        // The first frame was held until ten had been gathered.
        assert!(
            sent.load(Ordering::SeqCst) >= 10,
            "only {} frames sent when the first was handed on",
            sent.load(Ordering::SeqCst)
        );
        let mut total = first.len();
        while let Some(f) = s.next().await {
            total += f.expect("no error").len();
        }
        assert_eq!(total, FRAME * FRAMES);
        producer.await.expect("producer");
    }

    #[tokio::test]
    async fn a_lone_frame_from_a_producer_task_is_not_held_for_more() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        tx.send(Bytes::from_static(b"0011\x02Counting...\n"))
            .await
            .expect("send");
        let inner: BodyStream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|f| (Ok(f), rx))
        }));
        let mut s = Coalesced::new(inner);
        // The sender stays open and sends nothing more: the line must still come out.
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), s.next())
            .await
            .expect("handed on without more data")
            .expect("a frame")
            .expect("no error");
        assert_eq!(&line[..], b"0011\x02Counting...\n");
        drop(tx);
        assert!(s.next().await.is_none());
    }
}
