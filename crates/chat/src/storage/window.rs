//! [`Window`] and [`Page`]: how a store reads a history or an inbox in bounded pieces, shared by
//! every store trait.

/// Which part of a history to read: the newest `limit` messages older than `before`, stopping
/// early once their text passes `max_bytes`, so one request never loads more than about that
/// much whatever the messages' sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Most messages.
    pub limit: usize,
    /// Only messages with a smaller `seq` (the cursor of the page before); `None`: the newest.
    pub before: Option<i64>,
    /// Most bytes of message text; the first message is read whatever its size.
    pub max_bytes: usize,
}

impl Window {
    /// The `seq` bound for SQL: `before`, or past every seq.
    pub fn before_seq(&self) -> i64 {
        self.before.unwrap_or(i64::MAX)
    }
}

/// Messages read through a [`Window`], oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The messages.
    pub messages: Vec<T>,
    /// True when the window's byte limit stopped the read with older messages left: the rest
    /// is read with `before` set to the first message's seq.
    pub cut: bool,
}

/// Gathers a [`Window`]'s messages as a backend reads them, newest first, into a [`Page`].
#[derive(Debug)]
pub struct WindowTaker<T> {
    messages: Vec<T>,
    bytes: usize,
    max_bytes: usize,
    cut: bool,
}

impl<T> WindowTaker<T> {
    /// Starts reading `window`.
    pub fn new(window: Window) -> Self {
        Self {
            messages: Vec::new(),
            bytes: 0,
            max_bytes: window.max_bytes,
            cut: false,
        }
    }

    /// Takes the next older message, of `len` bytes of text; `false` (the message left out):
    /// the window is full, stop reading.
    pub fn take(&mut self, message: T, len: usize) -> bool {
        if !self.messages.is_empty() && self.bytes + len > self.max_bytes {
            self.cut = true;
            return false;
        }
        self.bytes += len;
        self.messages.push(message);
        true
    }

    /// Takes `messages` (each with its bytes of text, or why it could not be read) until the
    /// window is full; a failure ends the read.
    pub fn take_all<E>(
        mut self,
        messages: impl IntoIterator<Item = Result<(T, usize), E>>,
    ) -> Result<Self, E> {
        for m in messages {
            let (message, len) = m?;
            if !self.take(message, len) {
                break;
            }
        }
        Ok(self)
    }

    /// The page, oldest first, of messages taken newest first.
    pub fn finish(mut self) -> Page<T> {
        self.messages.reverse();
        self.finish_as_taken()
    }

    /// The page in the order the messages were taken (for a read oldest first).
    pub fn finish_as_taken(self) -> Page<T> {
        Page {
            messages: self.messages,
            cut: self.cut,
        }
    }
}
