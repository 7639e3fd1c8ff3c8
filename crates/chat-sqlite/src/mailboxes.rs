//! [`Mailboxes`]: each recipient's undelivered messages, kept in memory beside the database so that
//! `inbox` is answered without reading SQLite.
//!
//! Why: `docs/design/storage.md#mailboxes`. The database stays the truth; a mailbox is only ever
//! a copy of it, and only while it is exactly a copy:
//! - The writer thread, after each successful commit and before it answers any caller, adds the
//!   committed messages to their recipients' mailboxes and removes the delivered ones. So a
//!   message whose sender heard OK is already in the mailbox, and a failed commit changes nothing.
//! - A recipient has no mailbox until its first `inbox`. That one reads the database on a reader
//!   thread; the mailbox is marked as loading *before* the read's snapshot starts, and what the
//!   writer commits or delivers meanwhile is kept aside and merged by `seq` when the read is done.
//!   Whatever the snapshot saw or missed, the merge is then exactly the undelivered set.
//! - Memory is bounded: a mailbox holds at most `box_limit` messages and all of them together at
//!   most `budget` bytes. A mailbox that would grow past either is dropped, and its recipient is
//!   read from the database again (a recipient with more waiting than a mailbox holds is read from
//!   it every time, until the backlog is delivered). When a new mailbox does not fit, the empty
//!   ones are dropped to make room (at most once a second): they cost only a read to fill again.
//! - Messages are shared, not copied: the writer's `Arc` goes to the sender's reply and into the
//!   mailbox, and `inbox` gets the same `Arc`s back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use jaring_chat::storage::StoredMessage;

/// Bytes all mailboxes may hold together, by default.
pub(crate) const DEFAULT_BUDGET: usize = 32 * 1024 * 1024;

/// Messages one mailbox may hold, by default: twice what one `inbox` reply carries by default, so
/// a recipient a reply behind is still served from memory.
pub(crate) const DEFAULT_BOX_LIMIT: usize = 2 * jaring_chat::realm::DEFAULT_INBOX_MAX_MESSAGES;

/// What a mailbox's bookkeeping costs besides its messages and its recipient's name.
const BOX_OVERHEAD: usize = 96;

/// What a message costs besides its text fields.
const MESSAGE_OVERHEAD: usize = 96;

/// The mailboxes of the recipients that read their inbox, with their memory bounds.
#[derive(Debug)]
pub(crate) struct Mailboxes {
    boxes: HashMap<String, Mailbox>,
    /// Bytes held, by [`cost`] and [`BOX_OVERHEAD`].
    bytes: usize,
    budget: usize,
    box_limit: usize,
    next_ticket: u64,
    /// When empty mailboxes were last dropped to make room.
    last_sweep: Option<std::time::Instant>,
}

/// Least time between two sweeps for empty mailboxes.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug)]
struct Mailbox {
    state: State,
    /// Bytes this mailbox holds, counted in [`Mailboxes::bytes`].
    bytes: usize,
}

#[derive(Debug)]
enum State {
    /// Exactly the recipient's undelivered messages, oldest first.
    Known(VecDeque<Arc<StoredMessage>>),
    /// A reader is reading them from the database; what the writer committed and delivered since
    /// the mark was set, to merge with what the reader finds.
    Loading {
        ticket: u64,
        committed: Vec<Arc<StoredMessage>>,
        delivered_upto: i64,
    },
    /// More were waiting than a mailbox holds; the database answers until some are delivered.
    TooMany,
}

/// What [`Mailboxes::lookup`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The oldest undelivered messages, at most the limit asked for.
    Hit(Vec<Arc<StoredMessage>>),
    /// Not in memory: read the database, reading at least `read_limit` messages, and hand what
    /// it returned to [`Mailboxes::finish_load`] with the ticket, if there is one.
    Miss {
        /// Keeps the mailbox's place while the read runs.
        load: Option<Load>,
        /// How many messages to read: enough to fill the mailbox and tell whether more wait.
        read_limit: usize,
    },
}

/// A read of one recipient's undelivered messages that will fill its mailbox.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Load {
    recipient: String,
    ticket: u64,
}

impl Mailboxes {
    /// No mailboxes yet; at most `box_limit` messages in each and `budget` bytes in all.
    pub(crate) fn new(budget: usize, box_limit: usize) -> Self {
        Self {
            boxes: HashMap::new(),
            bytes: 0,
            budget,
            box_limit: box_limit.max(1),
            next_ticket: 0,
            last_sweep: None,
        }
    }

    /// The oldest `limit` undelivered messages to `recipient` if its mailbox holds them; else
    /// the mailbox is marked as loading (if it may be kept) and the caller reads the database.
    pub(crate) fn lookup(&mut self, recipient: &str, limit: usize) -> Lookup {
        let mut read_limit = limit;
        match self.boxes.get(recipient).map(|b| &b.state) {
            Some(State::Known(messages)) => {
                return Lookup::Hit(messages.iter().take(limit).cloned().collect());
            }
            Some(State::TooMany) => {
                return Lookup::Miss {
                    load: None,
                    read_limit,
                };
            }
            // A read that never finished (its caller gave up): this one takes its place.
            Some(State::Loading { .. }) => self.remove(recipient),
            None => {}
        }
        let cost = BOX_OVERHEAD + recipient.len();
        if self.bytes + cost > self.budget {
            // Users who read everything and left would hold the room for good: an empty mailbox
            // costs only a read to fill again. A sweep walks every mailbox, so at most one a
            // second: a budget full of non-empty ones would otherwise be walked on every miss.
            if self
                .last_sweep
                .is_none_or(|at| at.elapsed() >= SWEEP_INTERVAL)
            {
                self.last_sweep = Some(std::time::Instant::now());
                self.drop_empty();
            }
            if self.bytes + cost > self.budget {
                return Lookup::Miss {
                    load: None,
                    read_limit,
                };
            }
        }
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.boxes.insert(
            recipient.to_owned(),
            Mailbox {
                state: State::Loading {
                    ticket,
                    committed: Vec::new(),
                    delivered_upto: 0,
                },
                bytes: cost,
            },
        );
        self.bytes += cost;
        read_limit = read_limit.max(self.box_limit + 1);
        Lookup::Miss {
            load: Some(Load {
                recipient: recipient.to_owned(),
                ticket,
            }),
            read_limit,
        }
    }

    /// The read for `load` returned `read` (oldest first, as many as
    /// [`Lookup::Miss::read_limit`] asked for at most): the mailbox becomes those messages plus
    /// what was committed meanwhile, less what was delivered meanwhile.
    pub(crate) fn finish_load(&mut self, load: Load, read: &[Arc<StoredMessage>]) {
        let Some(mailbox) = self.boxes.get_mut(&load.recipient) else {
            return;
        };
        let State::Loading {
            ticket,
            committed,
            delivered_upto,
        } = &mut mailbox.state
        else {
            return;
        };
        if *ticket != load.ticket {
            return;
        }
        if read.len() > self.box_limit {
            self.remove(&load.recipient);
            self.insert_too_many(&load.recipient);
            return;
        }
        let committed = std::mem::take(committed);
        let delivered_upto = *delivered_upto;
        // The snapshot may have seen some of what was committed meanwhile: merge by `seq`.
        let mut messages = VecDeque::with_capacity(read.len() + committed.len());
        let mut read = read.iter().peekable();
        let mut committed = committed.into_iter().peekable();
        loop {
            let next = match (read.peek(), committed.peek()) {
                (Some(r), Some(c)) if r.seq < c.seq => read.next().cloned(),
                (Some(r), Some(c)) if r.seq == c.seq => {
                    read.next();
                    committed.next()
                }
                (_, Some(_)) => committed.next(),
                (Some(_), None) => read.next().cloned(),
                (None, None) => break,
            };
            if let Some(m) = next.filter(|m| m.seq > delivered_upto) {
                messages.push_back(m);
            }
        }
        // What was kept aside is counted already; the mailbox is counted anew.
        let bytes = BOX_OVERHEAD + load.recipient.len() + messages.iter().map(cost).sum::<usize>();
        let total = self.bytes - mailbox.bytes + bytes;
        if messages.len() > self.box_limit || total > self.budget {
            self.remove(&load.recipient);
            return;
        }
        mailbox.state = State::Known(messages);
        mailbox.bytes = bytes;
        self.bytes = total;
    }

    /// The read for `load` failed: its mailbox stays unknown.
    pub(crate) fn abandon(&mut self, load: Load) {
        if matches!(
            self.boxes.get(&load.recipient),
            Some(Mailbox { state: State::Loading { ticket, .. }, .. }) if *ticket == load.ticket
        ) {
            self.remove(&load.recipient);
        }
    }

    /// `message` was committed (the writer calls this after the commit, before anyone hears).
    pub(crate) fn committed(&mut self, message: &Arc<StoredMessage>) {
        let recipient = message.message.recipient.as_str();
        let Some(mailbox) = self.boxes.get_mut(recipient) else {
            return;
        };
        // In `seq` order whatever order they come in (a batch's messages from other modules'
        // jobs are read back after them): `inbox` hands out a prefix and marks it delivered up to
        // its last `seq`.
        let (len, added) = match &mut mailbox.state {
            State::Known(messages) => {
                let at = messages.partition_point(|m| m.seq < message.seq);
                messages.insert(at, Arc::clone(message));
                (messages.len(), cost(message))
            }
            State::Loading { committed, .. } => {
                let at = committed.partition_point(|m| m.seq < message.seq);
                committed.insert(at, Arc::clone(message));
                (committed.len(), cost(message))
            }
            State::TooMany => return,
        };
        mailbox.bytes += added;
        self.bytes += added;
        if len > self.box_limit {
            self.remove(recipient);
            self.insert_too_many(recipient);
        } else if self.bytes > self.budget {
            self.remove(recipient);
        }
    }

    /// Every message to `recipient` up to `upto_seq` was marked delivered (and committed).
    pub(crate) fn delivered(&mut self, recipient: &str, upto_seq: i64) {
        let Some(mailbox) = self.boxes.get_mut(recipient) else {
            return;
        };
        match &mut mailbox.state {
            State::Known(messages) => {
                let mut freed = 0;
                while messages.front().is_some_and(|m| m.seq <= upto_seq) {
                    freed += messages.pop_front().as_ref().map_or(0, cost);
                }
                mailbox.bytes -= freed;
                self.bytes -= freed;
            }
            State::Loading { delivered_upto, .. } => {
                *delivered_upto = (*delivered_upto).max(upto_seq);
            }
            // Fewer wait now: the next `inbox` may fit them in memory.
            State::TooMany => self.remove(recipient),
        }
    }

    /// Forgets every mailbox: the database may hold undelivered messages they lack.
    pub(crate) fn clear(&mut self) {
        self.boxes.clear();
        self.bytes = 0;
    }

    /// Bytes held, for tests and for the budget.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }

    /// What the bytes held should be, counted from scratch.
    #[cfg(test)]
    fn recount(&self) -> usize {
        self.boxes
            .iter()
            .map(|(recipient, mailbox)| {
                BOX_OVERHEAD
                    + recipient.len()
                    + match &mailbox.state {
                        State::Known(messages) => messages.iter().map(cost).sum(),
                        State::Loading { committed, .. } => committed.iter().map(cost).sum(),
                        State::TooMany => 0,
                    }
            })
            .sum()
    }

    /// Drops every mailbox that holds no message.
    fn drop_empty(&mut self) {
        let mut freed = 0;
        self.boxes.retain(|_, mailbox| {
            let empty = matches!(&mailbox.state, State::Known(messages) if messages.is_empty());
            if empty {
                freed += mailbox.bytes;
            }
            !empty
        });
        self.bytes -= freed;
    }

    fn remove(&mut self, recipient: &str) {
        if let Some(mailbox) = self.boxes.remove(recipient) {
            self.bytes -= mailbox.bytes;
        }
    }

    fn insert_too_many(&mut self, recipient: &str) {
        let cost = BOX_OVERHEAD + recipient.len();
        if self.bytes + cost <= self.budget {
            self.boxes.insert(
                recipient.to_owned(),
                Mailbox {
                    state: State::TooMany,
                    bytes: cost,
                },
            );
            self.bytes += cost;
        }
    }
}

/// What a message held in a mailbox is counted as.
fn cost(m: &Arc<StoredMessage>) -> usize {
    let m = &m.message;
    MESSAGE_OVERHEAD
        + m.sender.len()
        + m.sender_display.len()
        + m.recipient.len()
        + m.recipient_display.len()
        + m.body.len()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use jaring_chat::storage::NewMessage;

    fn stored(seq: i64, to: &str) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            seq,
            message: NewMessage {
                id: uuid::Uuid::nil(),
                sender: "s".into(),
                sender_display: "S".into(),
                recipient: to.into(),
                recipient_display: to.into(),
                body: format!("m{seq}"),
                sent_at: 0,
            },
        })
    }

    /// The load a lookup that must miss starts.
    fn start_load(boxes: &mut Mailboxes, to: &str, limit: usize) -> Load {
        match boxes.lookup(to, limit) {
            Lookup::Miss {
                load: Some(load), ..
            } => load,
            other => panic!("expected a load for {to}, got {other:?}"),
        }
    }

    fn seqs(messages: &[Arc<StoredMessage>]) -> Vec<i64> {
        messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn a_recipient_is_read_once_then_served_from_memory() {
        let mut boxes = Mailboxes::new(DEFAULT_BUDGET, 16);
        let Lookup::Miss {
            load: Some(load),
            read_limit,
        } = boxes.lookup("a", 10)
        else {
            panic!("a first lookup reads the database");
        };
        assert_eq!(
            read_limit, 17,
            "enough to fill the mailbox and see if more wait"
        );
        boxes.finish_load(load, &[stored(1, "a"), stored(3, "a")]);
        boxes.committed(&stored(4, "a"));
        boxes.committed(&stored(5, "b"));
        let Lookup::Hit(m) = boxes.lookup("a", 10) else {
            panic!("loaded");
        };
        assert_eq!(seqs(&m), [1, 3, 4]);
        boxes.delivered("a", 3);
        assert_eq!(boxes.lookup("a", 10), Lookup::Hit(vec![stored(4, "a")]));
        assert_eq!(boxes.lookup("a", 0), Lookup::Hit(vec![]));
    }

    #[test]
    fn messages_are_kept_in_seq_order_whatever_order_they_are_told_in() {
        let mut boxes = Mailboxes::new(DEFAULT_BUDGET, 16);
        let load = start_load(&mut boxes, "a", 10);
        // Loading: a batch's messages told out of order.
        boxes.committed(&stored(3, "a"));
        boxes.committed(&stored(2, "a"));
        boxes.finish_load(load, &[stored(1, "a")]);
        boxes.committed(&stored(5, "a"));
        boxes.committed(&stored(4, "a"));
        let Lookup::Hit(m) = boxes.lookup("a", 10) else {
            panic!("loaded");
        };
        assert_eq!(seqs(&m), [1, 2, 3, 4, 5]);
        boxes.delivered("a", 4);
        assert_eq!(boxes.lookup("a", 10), Lookup::Hit(vec![stored(5, "a")]));
    }

    #[test]
    fn a_recipient_with_more_waiting_than_a_mailbox_holds_is_read_until_they_are_delivered() {
        let mut boxes = Mailboxes::new(DEFAULT_BUDGET, 2);
        let load = start_load(&mut boxes, "a", 1);
        boxes.finish_load(load, &[stored(1, "a"), stored(2, "a"), stored(3, "a")]);
        assert_eq!(
            boxes.lookup("a", 1),
            Lookup::Miss {
                load: None,
                read_limit: 1
            }
        );
        boxes.delivered("a", 2);
        assert!(matches!(
            boxes.lookup("a", 1),
            Lookup::Miss { load: Some(_), .. }
        ));
    }

    #[test]
    fn the_budget_bounds_every_mailbox_together() {
        let message = MESSAGE_OVERHEAD + 6; // "s", "S", "a", "a" and "m1"
        let budget = 2 * (BOX_OVERHEAD + 1) + 3 * message + 50;
        let mut boxes = Mailboxes::new(budget, 100);
        for to in ["a", "b"] {
            let load = start_load(&mut boxes, to, 10);
            boxes.finish_load(load, &[]);
        }
        boxes.committed(&stored(1, "a"));
        boxes.committed(&stored(2, "b"));
        boxes.committed(&stored(3, "a"));
        assert_eq!(boxes.bytes(), budget - 50);
        assert!(
            matches!(boxes.lookup("c", 10), Lookup::Miss { load: None, .. }),
            "no room for another mailbox, and none empty to make room"
        );
        boxes.committed(&stored(4, "a"));
        assert!(boxes.bytes() <= budget);
        // "a" outgrew the budget and was dropped; "b" is still served.
        assert!(matches!(boxes.lookup("a", 10), Lookup::Miss { .. }));
        assert_eq!(boxes.lookup("b", 10), Lookup::Hit(vec![stored(2, "b")]));
    }

    #[test]
    fn empty_mailboxes_make_room_for_a_reader_who_has_none() {
        let budget = 3 * (BOX_OVERHEAD + 1);
        let mut boxes = Mailboxes::new(budget, 100);
        for to in ["a", "b", "c"] {
            let load = start_load(&mut boxes, to, 10);
            boxes.finish_load(load, &[]);
        }
        assert!(
            matches!(boxes.lookup("d", 10), Lookup::Miss { load: Some(_), .. }),
            "the empty mailboxes were dropped for d's"
        );
        assert!(boxes.bytes() <= budget);
        assert!(matches!(boxes.lookup("a", 10), Lookup::Miss { .. }));
    }

    #[test]
    fn an_abandoned_or_superseded_load_installs_nothing() {
        let mut boxes = Mailboxes::new(DEFAULT_BUDGET, 16);
        let first = start_load(&mut boxes, "a", 10);
        let second = start_load(&mut boxes, "a", 10);
        boxes.finish_load(first, &[stored(1, "a")]);
        let third = start_load(&mut boxes, "a", 10);
        boxes.abandon(second);
        boxes.abandon(third);
        assert_eq!(boxes.bytes(), 0);
    }

    /// One step of the writer or of a reader, against the database the mailboxes copy.
    #[derive(Debug, Clone)]
    enum Step {
        /// Commit a message to recipient `to` (0..3).
        Commit(u8),
        /// Deliver recipient `to`'s messages up to the `n`th oldest undelivered one.
        Deliver(u8, usize),
        /// Recipient `to` asks for its inbox: a hit, or a read whose snapshot is taken after
        /// `delay` more steps (so commits and deliveries race it) and whose result arrives after
        /// `delay + later` steps.
        Ask(u8, usize, usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..3u8).prop_map(Step::Commit),
            2 => (0..3u8, 0..4usize).prop_map(|(to, n)| Step::Deliver(to, n)),
            3 => (0..3u8, 0..3usize, 0..3usize).prop_map(|(to, d, l)| Step::Ask(to, d, l)),
        ]
    }

    /// A database read in flight in [`hits_always_match_the_database`].
    struct Read {
        /// The step at whose start the snapshot is taken.
        snapshot_at: usize,
        /// The step at whose start the result reaches the mailboxes.
        lands_at: usize,
        load: Option<Load>,
        to: usize,
        limit: usize,
        snapshot: Option<Vec<Arc<StoredMessage>>>,
    }

    proptest! {
        /// Whatever interleaving of commits, deliveries and racing reads, every hit is exactly the
        /// oldest undelivered messages in the database at that moment.
        #[test]
        fn hits_always_match_the_database(
            steps in proptest::collection::vec(step(), 1..80),
            box_limit in 1..6usize,
        ) {
            let names = ["a", "b", "c"];
            // seq -> (recipient, delivered)
            let mut db: BTreeMap<i64, (usize, bool)> = BTreeMap::new();
            let mut next_seq = 1;
            let mut boxes = Mailboxes::new(DEFAULT_BUDGET, box_limit);
            let mut reads: Vec<Read> = Vec::new();
            let undelivered = |db: &BTreeMap<i64, (usize, bool)>, to: usize, limit: usize| {
                db.iter()
                    .filter(|(_, (r, d))| *r == to && !d)
                    .map(|(s, _)| stored(*s, names[to]))
                    .take(limit)
                    .collect::<Vec<_>>()
            };
            for (now, step) in steps.into_iter().enumerate() {
                for read in &mut reads {
                    if read.snapshot_at == now {
                        read.snapshot = Some(undelivered(&db, read.to, read.limit));
                    }
                }
                while let Some(i) = reads.iter().position(|r| r.lands_at == now) {
                    let read = reads.remove(i);
                    if let Some(load) = read.load {
                        boxes.finish_load(load, &read.snapshot.unwrap_or_default());
                    }
                }
                prop_assert_eq!(boxes.bytes(), boxes.recount(), "bytes counted wrong");
                match step {
                    Step::Commit(to) => {
                        let to = usize::from(to);
                        db.insert(next_seq, (to, false));
                        boxes.committed(&stored(next_seq, names[to]));
                        next_seq += 1;
                    }
                    Step::Deliver(to, n) => {
                        let to = usize::from(to);
                        if let Some(upto) = undelivered(&db, to, usize::MAX).get(n).map(|m| m.seq) {
                            for (seq, (r, d)) in &mut db {
                                if *r == to && *seq <= upto {
                                    *d = true;
                                }
                            }
                            boxes.delivered(names[to], upto);
                        }
                    }
                    Step::Ask(to, delay, later) => {
                        let to = usize::from(to);
                        match boxes.lookup(names[to], 2) {
                            Lookup::Hit(hit) => {
                                prop_assert_eq!(seqs(&hit), seqs(&undelivered(&db, to, 2)));
                            }
                            Lookup::Miss { load, read_limit } => reads.push(Read {
                                snapshot_at: now + delay,
                                lands_at: now + delay + later + 1,
                                load,
                                to,
                                limit: read_limit,
                                // A snapshot taken at once sees this step's database.
                                snapshot: (delay == 0).then(|| undelivered(&db, to, read_limit)),
                            }),
                        }
                    }
                }
            }
        }
    }
}
