//! Ephemeral topics: this process's subscribers of messages that are broadcast, never stored.
//!
//! One broadcast channel per topic with subscribers; a topic nobody follows costs nothing (a
//! message for it is dropped at the lookup). Unlike store subscribers, a slow topic subscriber
//! is not closed: ephemeral state is re-sent by its owners all the time, so it is told how many
//! messages it missed and carries on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::broadcast;

pub(super) struct Topics {
    topics: Mutex<HashMap<Arc<str>, broadcast::Sender<Bytes>>>,
    capacity: usize,
}

impl Topics {
    pub fn new(capacity: usize) -> Arc<Topics> {
        Arc::new(Topics { topics: Mutex::new(HashMap::new()), capacity })
    }

    pub fn subscribe(self: &Arc<Self>, topic: &str) -> EphemeralFeed {
        let mut topics = self.topics.lock().expect("topics lock");
        let receiver = match topics.get(topic) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(self.capacity);
                topics.insert(topic.into(), sender);
                receiver
            }
        };
        EphemeralFeed { topics: self.clone(), topic: topic.into(), receiver: Some(receiver) }
    }

    pub fn deliver(&self, topic: &str, payload: Bytes) {
        if let Some(sender) = self.topics.lock().expect("topics lock").get(topic) {
            // An error only means every subscriber left meanwhile.
            let _ = sender.send(payload);
        }
    }

    #[cfg(test)]
    fn topic_count(&self) -> usize {
        self.topics.lock().expect("topics lock").len()
    }
}

/// A subscriber fell behind on a topic and lost this many messages; the feed goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("missed {0} ephemeral messages")]
pub struct Missed(pub u64);

/// One subscriber of an ephemeral topic in this process. Dropping it unsubscribes.
pub struct EphemeralFeed {
    topics: Arc<Topics>,
    topic: Arc<str>,
    // Taken in `drop`, under the topics lock, so that the last subscriber leaving and a new one
    // arriving cannot interleave.
    receiver: Option<broadcast::Receiver<Bytes>>,
}

impl EphemeralFeed {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next message on the topic, in the order this instance received them; or how many were
    /// lost because this subscriber fell `limits.subscriber_queue` messages behind.
    pub async fn recv(&mut self) -> Result<Bytes, Missed> {
        let receiver = self.receiver.as_mut().expect("present until drop");
        loop {
            match receiver.recv().await {
                Ok(payload) => return Ok(payload),
                Err(broadcast::error::RecvError::Lagged(missed)) => return Err(Missed(missed)),
                // The sender lives in the registry for as long as a feed of the topic exists.
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

impl Drop for EphemeralFeed {
    fn drop(&mut self) {
        let mut topics = self.topics.topics.lock().expect("topics lock");
        drop(self.receiver.take());
        if topics.get(&self.topic).is_some_and(|sender| sender.receiver_count() == 0) {
            topics.remove(&self.topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_to_every_subscriber_of_the_topic_only() {
        let topics = Topics::new(8);
        let mut a = topics.subscribe("synckit:awareness:doc");
        let mut b = topics.subscribe("synckit:awareness:doc");
        let mut other = topics.subscribe("synckit:awareness:other");
        topics.deliver("synckit:awareness:doc", Bytes::from_static(b"hello"));
        assert_eq!(a.recv().await.unwrap(), "hello");
        assert_eq!(b.recv().await.unwrap(), "hello");
        assert!(other.receiver.as_mut().unwrap().try_recv().is_err());
    }

    #[tokio::test]
    async fn a_lagging_subscriber_learns_what_it_missed_and_goes_on() {
        let topics = Topics::new(2);
        let mut feed = topics.subscribe("t");
        for i in 0..5u8 {
            topics.deliver("t", Bytes::from(vec![i]));
        }
        assert_eq!(feed.recv().await.unwrap_err(), Missed(3));
        assert_eq!(feed.recv().await.unwrap(), Bytes::from(vec![3]));
        assert_eq!(feed.recv().await.unwrap(), Bytes::from(vec![4]));
    }

    #[tokio::test]
    async fn the_last_subscriber_leaving_removes_the_topic() {
        let topics = Topics::new(2);
        let a = topics.subscribe("t");
        let b = topics.subscribe("t");
        drop(a);
        assert_eq!(topics.topic_count(), 1);
        drop(b);
        assert_eq!(topics.topic_count(), 0);
        // Nobody listens: nothing is kept.
        topics.deliver("t", Bytes::from_static(b"x"));
        assert_eq!(topics.topic_count(), 0);
    }
}
