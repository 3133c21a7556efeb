//! A small TCP fault proxy for chaos tests: forwards to an upstream, and on
//! command adds latency, resets connections or black-holes them.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward as is.
    Pass,
    /// Hold every chunk from the client this long before forwarding it.
    Latency(Duration),
    /// Drop every connection (open ones at once, new ones on arrival).
    Reset,
    /// Keep connections open but swallow what clients send: nothing reaches
    /// the upstream, nothing comes back (a dead host behind a live switch).
    BlackHole,
}

/// A running proxy; dropped, it stops.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    task: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FaultProxy {
    /// A proxy on 127.0.0.1:0 forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (fault, watcher) = watch::channel(Fault::Pass);
        let connections = Arc::new(Mutex::new(Vec::new()));
        let tracked = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let watcher = watcher.clone();
                let connection = tokio::spawn(relay(client, upstream, watcher));
                tracked.lock().unwrap().push(connection);
            }
        });
        Self {
            addr,
            fault,
            task,
            connections,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault for open and new connections.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, fault: watch::Receiver<Fault>) {
    if *fault.borrow() == Fault::Reset {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut upstream_fault = fault.clone();
    let mut reset_watch = fault.clone();
    let to_server = async move {
        let mut buf = vec![0_u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let current = *upstream_fault.borrow_and_update();
            match current {
                Fault::Pass => {}
                Fault::Latency(delay) => tokio::time::sleep(delay).await,
                Fault::Reset => return,
                Fault::BlackHole => continue,
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let to_client = async move {
        let mut buf = vec![0_u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Whichever side ends, or a switch to `Reset`, drops both halves.
    tokio::select! {
        () = to_server => {}
        () = to_client => {}
        () = async {
            while reset_watch.changed().await.is_ok() {
                if *reset_watch.borrow() == Fault::Reset {
                    return;
                }
            }
        } => {}
    }
}
