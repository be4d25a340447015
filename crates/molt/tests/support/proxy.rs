//! A TCP proxy between two nodes, for tests of a connection that breaks:
//! it forwards bytes both ways, and on command cuts every connection
//! through it (both sockets shut down, as a network drop the kernel
//! noticed) or refuses new ones until told otherwise.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Proxy {
    address: String,
    shared: Arc<Shared>,
}

struct Shared {
    target: String,
    refusing: AtomicBool,
    /// Both sockets of every connection made, for `cut`.
    sockets: Mutex<Vec<TcpStream>>,
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
}

impl Shared {
    fn forward(&self, client: TcpStream) -> io::Result<()> {
        let server = TcpStream::connect(&self.target)?;
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        let mut sockets = self.sockets.lock().unwrap();
        sockets.push(client.try_clone()?);
        sockets.push(server.try_clone()?);
        for (mut from, mut to) in [(client.try_clone()?, server.try_clone()?), (server, client)] {
            std::thread::spawn(move || {
                let _ = io::copy(&mut from, &mut to);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
            });
        }
        Ok(())
    }
}
