//! [`LiveSplit`]: what a listener serves, swappable while it runs, so
//! services can be added and removed without touching the listener.
//!
//! Each request loads the current [`ProtocolSplit`] (one atomic load) and is
//! served by it to the end; a swap affects only requests that arrive later,
//! so in-flight requests to a removed service finish.
//!
//! Each request (an HTTP/2 stream too) is also counted in its connection's
//! [`Activity`] (started, and finished when its answer's body is sent or
//! dropped), and so is each write to its socket ([`CountingIo`]) and, on
//! HTTP/2, each wait of an answer for room in its stream; the connection's
//! watch reads them to close a connection that has gone quiet or whose
//! client stopped reading: see [`ShutdownWatch`](super::watch::ShutdownWatch).

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
};

use arc_swap::ArcSwap;
use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::serve::Slot;
use crate::rpc::{ProtocolSplit, SplitFuture};

/// The current routes of a listener; clones share them.
#[derive(Clone)]
pub(crate) struct LiveSplit {
    current: Arc<ArcSwap<ProtocolSplit>>,
}

impl LiveSplit {
    pub(crate) fn new(split: ProtocolSplit) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(split)),
        }
    }

    /// Serves `split` from the next request on.
    pub(crate) fn store(&self, split: ProtocolSplit) {
        self.current.store(Arc::new(split));
    }

    /// The service of one connection from `peer`; its requests are counted
    /// in `activity`.
    pub(crate) fn for_peer(&self, peer: SocketAddr, activity: Arc<Activity>) -> PeerSplit {
        PeerSplit {
            current: Arc::clone(&self.current),
            peer,
            activity,
        }
    }
}

/// The requests of one connection so far: how many started and how many
/// finished; how many writes to its socket made progress, and whether the
/// last one waits for room in the socket. The counts only grow; the
/// connection is quiet while the requests started and finished are equal,
/// no write waits and nothing moves.
///
/// The writes count because a request is finished when hyper drops its
/// answer's body, which it does as soon as it has taken the last bytes into
/// its write buffer: a large answer (a `Json` or `Bytes` body of some
/// megabytes) to a slow reader is then still being sent, and must keep its
/// connection. The kernel wakes a writer only once a third of the socket's
/// send buffer (up to megabytes) is free again, so a slow reader can leave
/// a write waiting longer than the timeout: a waiting write counts as work
/// in flight, until nothing has been written for the write stall timeout
/// ([`Limits::write_stall_timeout`](crate::config::Limits::write_stall_timeout)).
///
/// On HTTP/2 the stream's flow-control window and h2's send buffer hold an
/// answer back before the socket does: hyper polls an answer's body for its
/// next frame only once the last data frame found room in the stream
/// ([`CountedBody`] hands data on in pieces of at most [`PIECE`], so that
/// h2 never takes in much more than that). A body that gave a data frame
/// and is not polled again waits for the client. `holds` counts such waits:
/// the low 32 bits those waiting now (at most one a stream), the high 32
/// bits how many ended (wrapping); a wait that does not end within the
/// write stall timeout is a client that stopped reading.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
    written: AtomicU64,
    waiting: AtomicBool,
    holds: AtomicU64,
    /// Whether an HTTP/1 request was answered `101 Switching Protocols` (or
    /// a `CONNECT` with a success): hyper then hands the socket to the
    /// request's handler.
    upgraded: AtomicBool,
}

/// One wait begun, in [`Activity::holds`].
const HOLD: u64 = 1;
/// One wait ended: one fewer waiting, one more ended.
const TAKE: u64 = (1 << 32) - 1;
/// One wait ended and the next begun (a poll that gave a data frame).
const TAKE_AND_HOLD: u64 = 1 << 32;

/// The largest piece of an HTTP/2 answer's data handed to hyper at once.
pub(crate) const PIECE: usize = 16 * 1024;

/// What an [`Activity`] counted, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    started: u64,
    finished: u64,
    written: u64,
    waiting: bool,
    holds: u64,
}

impl Counts {
    /// Whether nothing is in flight: no request, no write waiting.
    pub(crate) fn idle(self) -> bool {
        self.started == self.finished && !self.waiting && self.held() == 0
    }

    /// HTTP/2 answers waiting for the client now.
    fn held(self) -> u64 {
        self.holds & u64::from(u32::MAX)
    }

    /// HTTP/2 waits ended so far (wrapping).
    fn taken(self) -> u64 {
        self.holds >> 32
    }

    /// Whether no request started or finished between `earlier` and these.
    pub(crate) fn same_requests(self, earlier: Self) -> bool {
        (self.started, self.finished) == (earlier.started, earlier.finished)
    }

    /// Whether, since `earlier`, answers have waited to be sent and none
    /// moved: the last write waits for room in the socket and nothing was
    /// written, or an HTTP/2 answer waits for the peer's window and none
    /// was taken up again.
    pub(crate) fn stalled_since(self, earlier: Self) -> bool {
        let socket = self.waiting && self.written == earlier.written;
        let window = self.held() > 0 && self.taken() == earlier.taken();
        socket || window
    }
}

impl Activity {
    /// The counts now.
    pub(crate) fn counts(&self) -> Counts {
        Counts {
            started: self.started.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            holds: self.holds.load(Ordering::Relaxed),
        }
    }

    /// Counts a write that made progress. Only the connection's own task
    /// writes, so a load and a store do (no locked instruction per write).
    pub(super) fn wrote(&self) {
        let written = self.written.load(Ordering::Relaxed);
        self.written
            .store(written.wrapping_add(1), Ordering::Relaxed);
        self.waiting.store(false, Ordering::Relaxed);
    }

    /// Notes a write waiting for room in the socket.
    pub(super) fn waits(&self) {
        self.waiting.store(true, Ordering::Relaxed);
    }

    /// Notes that the connection switches protocols: its socket goes to a
    /// handler. Relaxed is enough: hyper hands the socket over through a
    /// channel, after the answer was made.
    fn upgrades(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// Whether the socket was handed to a handler.
    fn upgraded(&self) -> bool {
        self.upgraded.load(Ordering::Relaxed)
    }

    /// Counts a request started; `http2` to also count its answer's body's
    /// waits for the peer's window.
    pub(super) fn start(self: &Arc<Self>, http2: bool) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        InFlight {
            activity: Arc::clone(self),
            http2,
            held: false,
        }
    }
}

/// One request in flight; counted finished when dropped (with its answer's
/// body, or with the request when it is abandoned unanswered). On HTTP/2
/// it also counts its answer's body's waits for the peer's window.
pub(super) struct InFlight {
    activity: Arc<Activity>,
    http2: bool,
    /// Whether the body waits to be polled (a wait counted in `held`).
    held: bool,
}

impl InFlight {
    /// A poll of the body ended: with a data frame (`gave_data`), after
    /// which hyper polls again only once the stream has room, or without.
    /// On HTTP/2 the wait for that poll is counted (one atomic add).
    pub(super) fn polled(&mut self, gave_data: bool) {
        if !self.http2 {
            return;
        }
        let change = match (self.held, gave_data) {
            (false, false) => return,
            (false, true) => HOLD,
            (true, false) => TAKE,
            (true, true) => TAKE_AND_HOLD,
        };
        self.held = gave_data;
        self.activity.holds.fetch_add(change, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.polled(false);
        self.activity.finished.fetch_add(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// A connection's socket, its writes counted in the connection's
    /// [`Activity`]. It holds the connection's place in its
    /// listener ([`Slot`]), which goes with the socket: a connection
    /// upgraded (a WebSocket, say) and handed to a handler keeps it until
    /// the handler drops the socket. Once upgraded, its reads and writes
    /// fail when the node's drain timeout passes (the slot's force close),
    /// so that a handler waiting on the socket ends even if it ignores the
    /// service's shutdown signal.
    pub(crate) struct CountingIo<T> {
        #[pin]
        io: T,
        activity: Arc<Activity>,
        closing: Closing,
    }
}

impl<T> CountingIo<T> {
    pub(crate) fn new(io: T, activity: Arc<Activity>, slot: Option<Slot>) -> Self {
        Self {
            io,
            activity,
            closing: Closing {
                slot,
                reads: None,
                writes: None,
            },
        }
    }

    /// Counts `written` if it made progress or waits, and hands it on.
    fn count(activity: &Activity, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match &written {
            Poll::Ready(Ok(1..)) => activity.wrote(),
            Poll::Pending => activity.waits(),
            Poll::Ready(_) => {}
        }
        written
    }
}

/// An upgraded socket's watch for the node's force close; reads and writes
/// each wait with a waker of their own, since a handler may read and write
/// from two tasks.
struct Closing {
    slot: Option<Slot>,
    reads: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    writes: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

/// Which of a socket's directions polls.
#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

impl Closing {
    /// The error of a read or write of an upgraded socket once the node
    /// closed it; otherwise `None`, with `cx` woken when it does. A socket
    /// hyper still serves costs one load.
    fn closed(
        &mut self,
        activity: &Activity,
        direction: Direction,
        cx: &mut Context<'_>,
    ) -> Option<io::Error> {
        if !activity.upgraded() {
            return None;
        }
        let force_close = &self.slot.as_ref()?.force_close;
        let wait = match direction {
            Direction::Read => &mut self.reads,
            Direction::Write => &mut self.writes,
        };
        let wait = wait.get_or_insert_with(|| Box::pin(force_close.clone().cancelled_owned()));
        wait.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the node closed this upgraded connection: its drain timeout passed",
            )
        })
    }
}

impl<T: AsyncRead> AsyncRead for CountingIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if let Some(closed) = this.closing.closed(this.activity, Direction::Read, cx) {
            return Poll::Ready(Err(closed));
        }
        this.io.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for CountingIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        if let Some(closed) = this.closing.closed(this.activity, Direction::Write, cx) {
            return Poll::Ready(Err(closed));
        }
        Self::count(this.activity, this.io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        if let Some(closed) = this.closing.closed(this.activity, Direction::Write, cx) {
            return Poll::Ready(Err(closed));
        }
        Self::count(this.activity, this.io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if let Some(closed) = this.closing.closed(this.activity, Direction::Write, cx) {
            return Poll::Ready(Err(closed));
        }
        this.io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// The service of one connection: the current routes, with the peer's address.
#[derive(Clone)]
pub(crate) struct PeerSplit {
    current: Arc<ArcSwap<ProtocolSplit>>,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl<B> tower::Service<Request<B>> for PeerSplit
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<CountedBody>;
    type Error = Infallible;
    type Future = Counted<SplitFuture>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Routers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let http2 = request.version() == http::Version::HTTP_2;
        Counted {
            in_flight: Some(self.activity.start(http2)),
            tunnel: !http2 && request.method() == http::Method::CONNECT,
            inner: self.current.load().call_from(self.peer, request),
        }
    }
}

pin_project! {
    /// The answer of a connection's request; hands the request's
    /// [`InFlight`] on to the answer's body.
    pub(crate) struct Counted<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        // An HTTP/1 `CONNECT`: a success hands the socket to the handler.
        tunnel: bool,
    }
}

impl<F> Future for Counted<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<CountedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        let in_flight = this.in_flight.take();
        // hyper hands an HTTP/1 socket to the handler after a `101`, and
        // after any success to a `CONNECT`.
        let status = response.status();
        let upgraded = status == http::StatusCode::SWITCHING_PROTOCOLS
            || (*this.tunnel && status.is_success());
        if upgraded
            && let Some(in_flight) = &in_flight
            && !in_flight.http2
        {
            in_flight.activity.upgrades();
        }
        Poll::Ready(Ok(response.map(|body| CountedBody {
            body,
            in_flight,
            rest: Bytes::new(),
        })))
    }
}

pin_project! {
    /// An answer's body; its request is finished when it is dropped. On
    /// HTTP/2 its data goes out in pieces of at most [`PIECE`] bytes.
    pub(crate) struct CountedBody {
        #[pin]
        body: Body,
        in_flight: Option<InFlight>,
        // What is left of a data frame larger than a piece.
        rest: Bytes,
    }
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(in_flight) = this.in_flight else {
            return this.body.poll_frame(cx);
        };
        if !this.rest.is_empty() {
            in_flight.polled(true);
            let piece = this.rest.split_to(this.rest.len().min(PIECE));
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        let polled = this.body.poll_frame(cx);
        let Poll::Ready(Some(Ok(frame))) = polled else {
            in_flight.polled(false);
            return polled;
        };
        let frame = match frame.into_data() {
            Ok(mut data) => {
                if in_flight.http2 && data.len() > PIECE {
                    *this.rest = data.split_off(PIECE);
                }
                in_flight.polled(true);
                Frame::data(data)
            }
            Err(frame) => {
                // Trailers end the stream (and need no room in it).
                in_flight.polled(false);
                frame
            }
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.body.size_hint();
        let rest = u64::try_from(self.rest.len()).unwrap_or(u64::MAX);
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(rest));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::future::{pending, ready};

    use super::*;

    fn requests(activity: &Activity) -> (u64, u64) {
        let counts = activity.counts();
        (counts.started, counts.finished)
    }

    #[tokio::test]
    async fn writes_that_make_progress_are_counted() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let activity = Arc::new(Activity::default());
        let (near, mut far) = tokio::io::duplex(4);
        let mut io = CountingIo::new(near, Arc::clone(&activity), None);
        // The duplex takes four bytes at a time, as the far end reads.
        let mut read = [0_u8; 8];
        let (wrote, got) = tokio::join!(io.write_all(b"12345678"), far.read_exact(&mut read));
        wrote.unwrap();
        got.unwrap();
        assert_eq!(&read, b"12345678");
        let counts = activity.counts();
        assert!(counts.written >= 2, "{counts:?}");
        assert!(counts.idle(), "the last write made progress: {counts:?}");

        // A write the far end has no room for waits, and counts as busy.
        let written = futures_util::poll!(std::pin::pin!(io.write_all(b"123456")));
        assert!(written.is_pending());
        assert!(activity.counts().waiting && !activity.counts().idle());
        let mut read = [0_u8; 4];
        far.read_exact(&mut read).await.unwrap();
        io.write_all(b"56").await.unwrap();
        assert!(activity.counts().idle(), "{:?}", activity.counts());
    }

    #[tokio::test]
    async fn a_request_is_finished_once_its_answers_body_is_dropped() {
        let activity = Arc::new(Activity::default());
        let counted = Counted {
            tunnel: false,
            in_flight: Some(activity.start(false)),
            inner: ready(Ok::<_, Infallible>(Response::new(Body::from("hi")))),
        };
        assert_eq!(requests(&activity), (1, 0));
        let Ok(response) = counted.await;
        assert_eq!(requests(&activity), (1, 0), "its body is still to be sent");
        drop(response);
        assert_eq!(requests(&activity), (1, 1));
    }

    /// A counted answer to `http2` or HTTP/1 with `body`.
    async fn answer(activity: &Arc<Activity>, http2: bool, body: Body) -> CountedBody {
        let counted = Counted {
            tunnel: false,
            in_flight: Some(activity.start(http2)),
            inner: ready(Ok::<_, Infallible>(Response::new(body))),
        };
        let Ok(response) = counted.await;
        response.into_body()
    }

    /// HTTP/2: a body that gave a data frame waits for hyper to poll it
    /// again (for room in the stream); that wait ends when it is polled.
    #[tokio::test]
    async fn an_http2_body_waiting_for_room_in_its_stream_is_counted() {
        use http_body_util::BodyExt as _;

        let activity = Arc::new(Activity::default());
        let mut body = answer(&activity, true, Body::from("hi")).await;
        let made = activity.counts();
        assert!(!made.idle() && !made.stalled_since(made), "{made:?}");
        let frame = body.frame().await.unwrap().unwrap();
        assert!(frame.is_data());
        let gave = activity.counts();
        assert!(gave.stalled_since(gave), "waits after its frame: {gave:?}");
        assert!(body.frame().await.is_none());
        let ended = activity.counts();
        assert!(
            !ended.stalled_since(ended) && !ended.stalled_since(gave),
            "{ended:?}"
        );
        drop(body);
        assert!(activity.counts().idle(), "{:?}", activity.counts());
        assert_eq!(requests(&activity), (1, 1));

        // Dropped while waiting: the wait ends with it.
        let mut body = answer(&activity, true, Body::from("hi")).await;
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert!(activity.counts().idle(), "{:?}", activity.counts());
    }

    /// HTTP/2 answers go out in pieces, so that h2 takes in no more than a
    /// piece beyond the stream's room; HTTP/1 ones whole.
    #[tokio::test]
    async fn http2_data_is_handed_on_in_pieces() {
        use http_body::Body as _;
        use http_body_util::BodyExt as _;

        let activity = Arc::new(Activity::default());
        let data = vec![7_u8; 2 * PIECE + 100];
        let mut body = answer(&activity, true, Body::from(data.clone())).await;
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let mut sizes = Vec::new();
        let mut received = Vec::new();
        while let Some(frame) = body.frame().await {
            let piece = frame.unwrap().into_data().unwrap();
            sizes.push(piece.len());
            received.extend_from_slice(&piece);
            assert_eq!(
                body.is_end_stream(),
                received.len() == data.len(),
                "{sizes:?}"
            );
        }
        assert_eq!(sizes, [PIECE, PIECE, 100]);
        assert_eq!(received, data);

        let mut body = answer(&activity, false, Body::from(data.clone())).await;
        let whole = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(whole.len(), data.len());
    }

    #[test]
    fn a_request_abandoned_unanswered_is_finished() {
        let activity = Arc::new(Activity::default());
        let counted = Counted {
            tunnel: false,
            in_flight: Some(activity.start(false)),
            inner: pending::<Result<Response<Body>, Infallible>>(),
        };
        assert_eq!(requests(&activity), (1, 0));
        drop(counted);
        assert_eq!(requests(&activity), (1, 1));
    }
}
