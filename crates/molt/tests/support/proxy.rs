//! A TCP proxy between two nodes, for tests of a connection that breaks
//! or stalls: it forwards bytes both ways, and on command cuts every
//! connection through it (both sockets shut down, as a network drop the
//! kernel noticed), refuses new ones until told otherwise, or stops
//! forwarding (a peer that stops reading) until resumed.

use std::io;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

pub struct Proxy {
    address: String,
    shared: Arc<Shared>,
}

struct Shared {
    target: String,
    refusing: AtomicBool,
    /// Both sockets of every connection made, for `cut`.
    sockets: Mutex<Vec<TcpStream>>,
    /// Whether forwarding is stopped, and its change told.
    stalled: Mutex<bool>,
    moved: Condvar,
}

impl Proxy {
    /// A proxy on a free port of 127.0.0.1, forwarding to `target`.
    pub fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy binds");
        let address = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            target: target.to_owned(),
            refusing: AtomicBool::new(false),
            sockets: Mutex::new(Vec::new()),
            stalled: Mutex::new(false),
            moved: Condvar::new(),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                // Accepted and closed at once: the dialer sees its
                // handshake fail, as across a network that is down.
                if accepting.refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let _ = accepting.forward(client);
            }
        });
        Proxy { address, shared }
    }

    /// Where to dial the target through the proxy.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Breaks every connection through the proxy; new ones go through.
    pub fn cut(&self) {
        for socket in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Breaks every connection and turns new ones away until `restore`.
    pub fn block(&self) {
        self.shared.refusing.store(true, Ordering::SeqCst);
        self.cut();
    }

    pub fn restore(&self) {
        self.shared.refusing.store(false, Ordering::SeqCst);
    }

    /// Stops forwarding, both ways: what the nodes write piles up in the
    /// sockets' buffers, as towards a peer that stopped reading.
    pub fn stall(&self) {
        *self.shared.stalled.lock().unwrap() = true;
    }

    /// Forwards again after `stall`.
    pub fn resume(&self) {
        *self.shared.stalled.lock().unwrap() = false;
        self.shared.moved.notify_all();
    }
}

impl Shared {
    fn forward(self: &Arc<Self>, client: TcpStream) -> io::Result<()> {
        let server = TcpStream::connect(&self.target)?;
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        let mut sockets = self.sockets.lock().unwrap();
        sockets.push(client.try_clone()?);
        sockets.push(server.try_clone()?);
        drop(sockets);
        for (from, to) in [(client.try_clone()?, server.try_clone()?), (server, client)] {
            let shared = Arc::clone(self);
            std::thread::spawn(move || shared.pump(from, to));
        }
        Ok(())
    }

    /// Copies `from` to `to` until either closes, reading nothing while
    /// stalled.
    fn pump(&self, mut from: TcpStream, mut to: TcpStream) {
        let mut buffer = [0; 16 << 10];
        loop {
            drop(self.moved.wait_while(self.stalled.lock().unwrap(), |stalled| *stalled).unwrap());
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if to.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}
