//! The same round trips and one-way stream between two actix actors:
//! the fastest Rust actor library's two-actor ping-pong, run side by side
//! with molt's in the same harness run (issue 10's speed target).
//!
//! Each run is a fresh `actix::System` (one thread, as actix runs an
//! arbiter). The messages are what molt's carry: a `(sender, u64)` there
//! and a `u64` back, a `u64` one way.

use std::time::Instant;

use actix::prelude::*;

use crate::workloads::Measurement;

/// A ping carrying the address to answer.
struct Ping(Addr<Pinger>, u64);

impl Message for Ping {
    type Result = ();
}

/// The answer.
struct Pong(u64);

impl Message for Pong {
    type Result = ();
}

/// Answers every ping.
struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Ping> for Echo {
    type Result = ();

    fn handle(&mut self, Ping(from, x): Ping, _: &mut Context<Self>) {
        from.do_send(Pong(x));
    }
}

/// Sends the next ping when the last pong comes back; reports when done.
struct Pinger {
    echo: Addr<Echo>,
    n: u64,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Actor for Pinger {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.echo.do_send(Ping(ctx.address(), 0));
    }
}

impl Handler<Pong> for Pinger {
    type Result = ();

    fn handle(&mut self, Pong(x): Pong, ctx: &mut Context<Self>) {
        assert!(x < self.n, "a pong for a ping never sent");
        if x + 1 == self.n {
            if let Some(done) = self.done.take() {
                let _ = done.send(());
            }
        } else {
            self.echo.do_send(Ping(ctx.address(), x + 1));
        }
    }
}

/// `n` round trips between two actors.
pub(crate) fn round_trips(n: u64) -> Measurement {
    let seconds = System::new().block_on(async move {
        let echo = Echo.start();
        let (done, finished) = tokio::sync::oneshot::channel();
        let start = Instant::now();
        let _pinger = Pinger { echo, n, done: Some(done) }.start();
        finished.await.expect("the pinger finishes");
        start.elapsed().as_secs_f64()
    });
    Measurement { seconds, ..Default::default() }
}

/// One number for the sink.
struct Number(u64);

impl Message for Number {
    type Result = ();
}

/// Adds up `n` numbers, then reports the sum.
struct Sink {
    left: u64,
    sum: u64,
    done: Option<tokio::sync::oneshot::Sender<u64>>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Number> for Sink {
    type Result = ();

    fn handle(&mut self, Number(x): Number, _: &mut Context<Self>) {
        self.sum = self.sum.wrapping_add(x);
        self.left -= 1;
        if self.left == 0
            && let Some(done) = self.done.take()
        {
            let _ = done.send(self.sum);
        }
    }
}

/// Sends `n` numbers to the sink as fast as it can.
struct Producer {
    sink: Addr<Sink>,
    n: u64,
}

impl Actor for Producer {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        for i in 0..self.n {
            self.sink.do_send(Number(i));
        }
    }
}

/// `n` `u64`s from one actor to another, which adds them up.
pub(crate) fn one_way(n: u64) -> Measurement {
    let seconds = System::new().block_on(async move {
        let (done, finished) = tokio::sync::oneshot::channel();
        let start = Instant::now();
        let sink = Sink { left: n, sum: 0, done: Some(done) }.start();
        let _producer = Producer { sink, n }.start();
        let sum = finished.await.expect("the sink reports its sum");
        assert_eq!(sum, (0..n).fold(0u64, u64::wrapping_add));
        start.elapsed().as_secs_f64()
    });
    Measurement { seconds, ..Default::default() }
}
