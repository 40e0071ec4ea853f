//! The command router: takes calls off the adapter's queue, writes whatever has queued as one
//! pipeline on the link's connection, fails calls that waited their `connectTimeout` for a
//! connection, and retries calls the server refused for now (LOADING, BUSY, MASTERDOWN,
//! TRYAGAIN, a full server; under Sentinel, READONLY from a demoted master) within their
//! deadline. Under Sentinel the link follows the master the sentinels announce; this is where
//! Cluster will choose a link per call.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{sleep_until, Instant};

use super::link::Link;
use super::sentinel::next_switch;
use super::Request;
use crate::bridge::{Outbox, Reply};
use crate::error::StoreError;

/// Commands taken off the queue into one pipeline at most.
const MAX_BATCH: usize = 1024;
const SPIN: Duration = Duration::from_micros(200);
/// Timers fire on millisecond ticks: deadlines this close fire together.
const TIMER_TICK: Duration = Duration::from_millis(2);

pub async fn serve(
    mut link: Link,
    mut queue: UnboundedReceiver<Request>,
    mut refused: UnboundedReceiver<(Request, StoreError)>,
    outbox: std::sync::Arc<Outbox>,
) {
    // Connect at once, so the first calls find the connection ready or being made.
    link.start_attempt();
    let mut switches = link.switches();
    let mut waiting: Vec<Request> = Vec::new();
    // Calls the server refused for now, and every call submitted after them, in submission
    // order: sent again together when `held_until` comes, so retries never reorder calls.
    let mut held: Vec<Request> = Vec::new();
    let mut held_until: Option<Instant> = None;
    let mut pipelining = false;
    loop {
        // Under pipelined load, poll a little before parking: JS answers a batch with the
        // next within microseconds, and waking a parked thread costs a syscall and a context
        // switch each time. One call at a time does not pay for the spinning.
        if pipelining {
            let spin_until = std::time::Instant::now() + SPIN;
            while queue.is_empty() && std::time::Instant::now() < spin_until {
                tokio::task::yield_now().await;
            }
        }
        let connected = link.usable().is_some();
        // Calls that wait as long as the attempt under way get its outcome, and the reason
        // it gives when it fails.
        let give_up_at = (!connected)
            .then(|| waiting.iter().map(|r| r.wait_until).min())
            .flatten()
            .filter(|at| link.attempt_ends().is_none_or(|end| end > *at + TIMER_TICK));
        tokio::select! {
            biased;
            outcome = link.attempt_done(), if link.connecting() => match outcome {
                Ok(()) => {}
                // A server refusing connections for now (maxclients): calls wait out their own
                // connect budget while attempts go on with backoff.
                Err(err) if err.retryable => {}
                // Each call rides at most one failed attempt: those waiting fail with it.
                Err(err) => fail(&outbox, waiting.drain(..), &err),
            },
            // Under Sentinel: nothing more goes to the old master once the switch is known.
            switch = next_switch(&mut switches) => {
                let drained = switch.previous_down
                    || link.connection().is_none_or(|live| live.is_idle());
                if link.follow(&switch) {
                    link.start_attempt();
                    // Calls the old master refused for now (NOREPLICAS, READONLY) go to the
                    // new one as soon as it is connected, not after their backoff; unless
                    // calls written after them may still be refused there and join them, so
                    // they keep their order.
                    if held_until.is_some() && drained {
                        held_until = Some(Instant::now());
                    }
                }
            }
            Some((request, err)) = refused.recv() => {
                hold(request, err, link.timeouts.command, &mut held, &mut held_until, &outbox)
            }
            count = queue.recv_many(&mut waiting, MAX_BATCH) => if count == 0 { break },
            _ = sleep_until(held_until.unwrap_or_else(Instant::now)), if held_until.is_some() => {
                held_until = None;
                held.sort_by_key(|request| request.seq);
                held.append(&mut waiting);
                waiting = std::mem::take(&mut held);
            }
            _ = sleep_until(give_up_at.unwrap_or_else(Instant::now)), if give_up_at.is_some() => {
                let now = Instant::now();
                let (expired, kept): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|r| r.wait_until <= now);
                waiting = kept;
                // A call the server refused for now fails with its words, others with the link's.
                let not_connected = link.not_connected();
                outbox.push_all(expired.into_iter().filter_map(|mut request| {
                    let err = request.refused.take().unwrap_or_else(|| not_connected.clone());
                    request.settled(Reply::Error(err))
                }));
            }
        }
        if held_until.is_some() {
            // Their clock runs from now, as if written: held calls wait on the server too.
            let now = Instant::now();
            for request in &mut waiting {
                request.first_written.get_or_insert(now);
            }
            held.append(&mut waiting);
        }
        pipelining = waiting.len() > 1;
        if waiting.is_empty() {
            continue;
        }
        match link.usable() {
            // A connection that closed just before leaves the calls waiting for the next.
            Some(connection) => {
                let _ = connection.send_calls(&mut waiting).await;
            }
            None => {
                link.discard();
                link.start_attempt();
            }
        }
    }
}

/// A call the server refused for now waits among the held calls, in submission order, until
/// `Request::hold` says to send it again; past its deadline it fails with the server's words
/// and `retryable`.
fn hold(
    mut request: Request,
    err: StoreError,
    command_timeout: Duration,
    held: &mut Vec<Request>,
    held_until: &mut Option<Instant>,
    outbox: &Outbox,
) {
    match request.hold(err, command_timeout) {
        Ok(at) => {
            *held_until = Some(held_until.map_or(at, |until| until.min(at)));
            held.push(request);
        }
        Err(err) => outbox.push_all(request.settled(Reply::Error(err))),
    }
}

fn fail(outbox: &Outbox, requests: impl Iterator<Item = Request>, err: &StoreError) {
    outbox.push_all(requests.filter_map(|request| request.settled(Reply::Error(err.clone()))));
}
