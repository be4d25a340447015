use molt_abi::{Envelope, Message};

use super::{Mailbox, Received, Scan};

fn numbers(mailbox: &Mailbox, received: &mut Received) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cursor = 0;
    while mailbox.receive(received, &[u32::TAG], &mut cursor, |e| {
        out.push(Envelope::decode::<u32>(&e.payload).unwrap());
        true
    }) == Scan::Taken
    {
        cursor = 0;
    }
    out
}

#[test]
fn skipped_messages_keep_their_order_and_the_cursor_saves_rescans() {
    let mailbox = Mailbox::default();
    let mut saved = Received::default();
    for n in 0..5u32 {
        mailbox.push(Envelope::encode(&n).unwrap());
        mailbox.push(Envelope::encode(&format!("s{n}")).unwrap());
    }
    let mut cursor = 0;
    let mut offered = 0;
    let scan = mailbox.receive(&mut saved, &[u64::TAG], &mut cursor, |_| {
        offered += 1;
        true
    });
    assert_eq!(scan, Scan::Empty);
    assert_eq!((cursor, offered), (10, 0));
    // A later pass of the same receive starts where the last one stopped.
    mailbox.push(Envelope::encode(&7u64).unwrap());
    let scan = mailbox.receive(&mut saved, &[u64::TAG], &mut cursor, |e| {
        offered += 1;
        e.tag == u64::TAG
    });
    assert_eq!((scan, cursor, offered), (Scan::Taken, 10, 1));
    assert_eq!(numbers(&mailbox, &mut saved), vec![0, 1, 2, 3, 4]);
    assert_eq!(saved.saved.len(), 5);
}

#[test]
fn a_cleared_mailbox_keeps_nothing_pushed_after() {
    let mailbox = Mailbox::default();
    mailbox.push(Envelope::encode(&1u64).unwrap());
    mailbox.clear();
    mailbox.push(Envelope::encode(&vec![0u8; 1 << 20]).unwrap());
    assert_eq!(mailbox.len(), 0);
}

/// The hint a body reads to answer a receive itself (`ReceiveHint`): idle
/// only while nothing unread is left and the next push wakes the owner, and
/// never while a receive's matcher runs.
#[test]
fn the_receive_hint_is_idle_only_when_a_receive_would_find_nothing() {
    use std::sync::atomic::Ordering::SeqCst;
    let mailbox = Mailbox::default();
    let mut received = Received::default();
    let hint = mailbox.hint();
    let idle = || hint.idle.load(SeqCst) && hint.queued.load(SeqCst) == 0;
    assert!(!idle(), "a new mailbox has not been looked at");
    mailbox.push(Envelope::encode(&1u32).unwrap());
    mailbox.push(Envelope::encode(&String::from("text")).unwrap());
    let mut idle_in_matcher = true;
    let mut cursor = 0;
    let scan = mailbox.receive(&mut received, &[u32::TAG], &mut cursor, |_| {
        idle_in_matcher = hint.idle.load(SeqCst);
        true
    });
    assert_eq!((scan, idle_in_matcher), (Scan::Taken, false));
    assert!(!idle(), "an unread message is left");
    let mut cursor = 0;
    let scan = mailbox.receive(&mut received, &[String::TAG], &mut cursor, |_| true);
    assert_eq!(scan, Scan::Taken);
    assert!(idle(), "nothing is left and the owner is armed");
    mailbox.push(Envelope::encode(&2u32).unwrap());
    assert!(!idle(), "a push arrived");
    assert_eq!(numbers(&mailbox, &mut received), vec![2]);
    assert!(idle());
    mailbox.disarm(&mut received);
    assert!(!idle(), "a task that moved looks at the inbox under the lock first");
}
