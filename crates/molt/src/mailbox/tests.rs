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

/// A stream's room stays while the owner takes messages (no copy as a
/// batch drains) and goes once a receive finds nothing (the owner waits).
#[test]
fn a_waiting_owner_keeps_no_streams_room() {
    let mailbox = Mailbox::default();
    let mut received = Received::default();
    for round in 0..3u32 {
        for n in 0..5_000u32 {
            mailbox.push(Envelope::encode(&n).unwrap());
        }
        for _ in 0..4_000 {
            let scan = mailbox.receive(&mut received, &[u32::TAG], &mut 0, |_| true);
            assert_eq!(scan, Scan::Taken, "round {round}");
        }
        assert!(received.saved.capacity() >= 5_000, "round {round}: the batch's room went while it drained");
        assert_eq!(numbers(&mailbox, &mut received), (4_000..5_000).collect::<Vec<_>>(), "round {round}");
        let inbox = mailbox.inbox.lock().queue.capacity();
        assert!(received.saved.capacity() <= super::SHRINK_ABOVE, "round {round}: {}", received.saved.capacity());
        assert!(inbox <= super::SHRINK_ABOVE, "round {round}: {inbox}");
    }
}
