//! What a waiting thread waits on: the file descriptor of its blocking system call, and what
//! that descriptor is.
//!
//! `/proc/PID/task/TID/syscall` gives the call's arguments (proc(5)). For calls on one
//! descriptor (`read`, `recvfrom`, `sendto`, `connect`, `accept4`, `fsync`...) it is the first
//! argument; for `poll`/`ppoll` it is the first `struct pollfd` the first argument points to,
//! and for `select`/`pselect6` the lowest descriptor set in the read set, both read from the
//! target's memory. `/proc/PID/fd/N` then tells what it is: a TCP/UDP socket (its peer from
//! `/proc/PID/net/tcp*`/`udp*`, the target's own network namespace), a Unix socket, a pipe
//! (and which child process of the target holds it too), a regular file, an eventfd or a tty.
//! Each waiting thread costs one `readlink` per tick; descriptions are cached by link target
//! (a socket or pipe inode is unique while open), and the socket tables are re-read at most
//! every 250 ms. Every link read is the target's own `/proc` entry.

use remoteprocess::ProcessMemory;
use std::collections::HashMap;

/// Syscalls whose first argument is the descriptor waited on.
const FD_FIRST: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "connect",
    "accept",
    "accept4",
    "fsync",
    "fdatasync",
    "flock",
    "ftruncate",
    "fallocate",
    "sendfile",
    "splice",
];

/// The descriptor a thread blocked in `syscall` with `args` waits on; `mem` reads the
/// target's memory for `poll`/`select` argument arrays.
pub fn fd_of(syscall: &str, args: &[u64; 6], mem: &impl ProcessMemory) -> Option<i32> {
    if FD_FIRST.contains(&syscall) {
        return i32::try_from(args[0] as i64).ok().filter(|fd| *fd >= 0);
    }
    match syscall {
        "poll" | "ppoll" => {
            if args[1] == 0 || args[0] == 0 {
                return None;
            }
            // struct pollfd { int fd; short events; short revents; }
            let mut b = [0u8; 4];
            mem.read(args[0] as usize, &mut b).ok()?;
            Some(i32::from_ne_bytes(b)).filter(|fd| *fd >= 0)
        }
        "select" | "pselect6" => {
            let nfds = usize::try_from(args[0]).ok()?.min(4096);
            if nfds == 0 || args[1] == 0 {
                return None;
            }
            let mut set = vec![0u8; nfds.div_ceil(8)];
            mem.read(args[1] as usize, &mut set).ok()?;
            (0..nfds)
                .find(|&i| set[i / 8] & (1 << (i % 8)) != 0)
                .map(|i| i as i32)
        }
        _ => None,
    }
}

/// Parses the arguments of a `/proc/.../syscall` line (`nr arg1 ... arg6 sp pc`, hex).
pub fn parse_args(line: &str) -> Option<[u64; 6]> {
    let mut it = line.split_ascii_whitespace().skip(1);
    let mut out = [0u64; 6];
    for v in out.iter_mut() {
        *v = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some(out)
}

/// One socket of `/proc/net/{tcp,tcp6,udp,udp6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetEntry {
    /// `tcp` or `udp`.
    pub proto: &'static str,
    /// Local address, `ip:port`.
    pub local: String,
    /// Remote address, `ip:port` (`0.0.0.0:0` when not connected).
    pub remote: String,
    /// TCP state code (0x0A = listening).
    pub state: u8,
}

/// Decodes the hex `ADDR:PORT` of `/proc/net/tcp` (IPv4: one 32-bit word in host byte
/// order) or `/proc/net/tcp6` (four such words).
pub fn decode_addr(hex: &str) -> Option<String> {
    let (addr, port) = hex.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<u32>> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok())
        .collect();
    let bytes: Vec<u8> = words?.into_iter().flat_map(u32::to_ne_bytes).collect();
    match bytes.len() {
        4 => Some(format!(
            "{}.{}.{}.{}:{port}",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )),
        16 => {
            let a: [u8; 16] = bytes.try_into().ok()?;
            let ip = std::net::Ipv6Addr::from(a);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => format!("{v4}:{port}"),
                None => format!("[{ip}]:{port}"),
            })
        }
        _ => None,
    }
}

/// Parses one `/proc/net/{tcp,udp}[6]` table: inode → entry.
pub fn parse_net_table(text: &str, proto: &'static str) -> HashMap<u64, NetEntry> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            let inode = f.get(9)?.parse().ok()?;
            Some((
                inode,
                NetEntry {
                    proto,
                    local: decode_addr(f.get(1)?)?,
                    remote: decode_addr(f.get(2)?)?,
                    state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                },
            ))
        })
        .collect()
}

/// Describes the descriptors of one process, with caches.
pub struct WaitTargets {
    pid: u32,
    /// Per link target (`socket:[123]`, `pipe:[45]`, a path): the description. Inodes are
    /// unique while open, so a reused descriptor number with a new link is a new entry.
    by_link: HashMap<String, Option<String>>,
    /// The target's TCP/UDP sockets by inode, and when they were read.
    net: Option<(std::time::Instant, HashMap<u64, NetEntry>)>,
}

/// How old the socket tables may be before an inode missing from them makes loopprof read
/// them again. A host with thousands of connections (or TIME_WAIT entries) has tables of a
/// few hundred kilobytes: they are read at most this often, never per socket.
const NET_TABLE_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(250);

/// Bounds the description cache (a process that opens many short connections).
const MAX_CACHED_LINKS: usize = 4096;

impl WaitTargets {
    /// Nothing cached yet for process `pid`.
    pub fn new(pid: u32) -> Self {
        WaitTargets {
            pid,
            by_link: HashMap::new(),
            net: None,
        }
    }

    /// What a thread blocked in `syscall` with `args` waits on. Costs one `readlink` (and,
    /// for `poll`/`select`, one read of the target's memory); descriptions are cached by
    /// link target.
    pub fn describe(
        &mut self,
        syscall: &str,
        args: &[u64; 6],
        mem: &impl ProcessMemory,
    ) -> Option<String> {
        let fd = fd_of(syscall, args, mem)?;
        self.describe_fd(fd)
    }

    /// What descriptor `fd` of the process is.
    pub fn describe_fd(&mut self, fd: i32) -> Option<String> {
        let link = std::fs::read_link(format!("/proc/{}/fd/{fd}", self.pid)).ok()?;
        let link = link.to_string_lossy().into_owned();
        if let Some(d) = self.by_link.get(&link) {
            return d.clone();
        }
        let (d, settled) = self.classify_link(&link);
        if settled {
            if self.by_link.len() >= MAX_CACHED_LINKS {
                self.by_link.clear();
            }
            self.by_link.insert(link, d.clone());
        }
        d
    }

    /// The description of a link, and whether it is settled (cacheable): a socket missing
    /// from socket tables read before it was created is not.
    fn classify_link(&mut self, link: &str) -> (Option<String>, bool) {
        let inode = |prefix: &str| -> Option<u64> {
            link.strip_prefix(prefix)?.strip_suffix(']')?.parse().ok()
        };
        if let Some(ino) = inode("socket:[") {
            let (d, settled) = self.socket(ino);
            return (Some(d), settled);
        }
        if let Some(ino) = inode("pipe:[") {
            return (
                Some(match self.pipe_peer(ino) {
                    Some((pid, cmd)) => format!("pipe from child process {pid} ({cmd})"),
                    None => "pipe".to_owned(),
                }),
                true,
            );
        }
        if let Some(kind) = link
            .strip_prefix("anon_inode:")
            .map(|k| k.trim_matches(|c| c == '[' || c == ']'))
        {
            return (Some(kind.to_owned()), true);
        }
        if link.starts_with("/dev/pts/") || link.starts_with("/dev/tty") {
            return (Some(format!("terminal {link}")), true);
        }
        if link.starts_with('/') {
            return (Some(format!("file {link}")), true);
        }
        (None, true)
    }

    /// A socket by inode: TCP/UDP with its peer, else a Unix socket; and whether that is
    /// settled (found, or missing from tables read just now).
    fn socket(&mut self, ino: u64) -> (String, bool) {
        let stale = self
            .net
            .as_ref()
            .is_none_or(|(at, t)| !t.contains_key(&ino) && at.elapsed() >= NET_TABLE_MAX_AGE);
        if stale {
            let mut table = HashMap::new();
            for (file, proto) in [
                ("tcp", "tcp"),
                ("tcp6", "tcp"),
                ("udp", "udp"),
                ("udp6", "udp"),
            ] {
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{}/net/{file}", self.pid))
                {
                    table.extend(parse_net_table(&text, proto));
                }
            }
            self.net = Some((std::time::Instant::now(), table));
        }
        match self.net.as_ref().and_then(|(_, t)| t.get(&ino)) {
            Some(e) if e.state == 0x0A => {
                (format!("{} listening socket {}", e.proto, e.local), true)
            }
            Some(e) if e.remote.ends_with(":0") => {
                (format!("{} socket {}", e.proto, e.local), true)
            }
            Some(e) => (format!("{} socket to {}", e.proto, e.remote), true),
            // Missing from tables read just now: not TCP/UDP. Missing from older tables:
            // maybe a socket created since; say no more until they are read again.
            None if stale => ("unix socket".to_owned(), true),
            None => (crate::recording::UNIDENTIFIED_SOCKET.to_owned(), false),
        }
    }

    /// The first descendant process of the target that has the same pipe open.
    fn pipe_peer(&self, ino: u64) -> Option<(u32, String)> {
        let parents = super::procfs::process_parents();
        let want = format!("pipe:[{ino}]");
        for child in super::procfs::descendants(self.pid, &parents) {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{child}/fd")) else {
                continue;
            };
            for e in dir.flatten() {
                if std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == want) {
                    let cmd = super::procfs::cmdline(child).unwrap_or_default().join(" ");
                    let cmd: String = cmd.chars().take(80).collect();
                    return Some((child, cmd));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_proc_net_addresses_and_syscall_args() {
        assert_eq!(
            decode_addr("0100007F:1538").as_deref(),
            Some("127.0.0.1:5432")
        );
        assert_eq!(
            decode_addr("0000000000000000FFFF00000100007F:0050").as_deref(),
            Some("127.0.0.1:80")
        );
        assert_eq!(
            decode_addr("00000000000000000000000001000000:1F90").as_deref(),
            Some("[::1]:8080")
        );
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:D2C4 0100007F:1538 01 00000000:00000000 00:00000000 00000000  1000        0 424242 1 0000000000000000 20 4 30 10 -1\n";
        let t = parse_net_table(table, "tcp");
        assert_eq!(t[&424242].remote, "127.0.0.1:5432");
        assert_eq!(t[&424242].state, 1);
        assert_eq!(
            parse_args("45 0x7 0x7f00 0x10000 0x0 0x0 0x0 0x7ffd 0x7f12"),
            Some([7, 0x7f00, 0x10000, 0, 0, 0])
        );
        assert_eq!(parse_args("running"), None);
    }

    #[test]
    fn describes_this_processs_own_descriptors() {
        use std::os::fd::AsRawFd;
        let me = std::process::id();
        let mut w = WaitTargets::new(me);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let d = w.describe_fd(client.as_raw_fd()).unwrap();
        assert_eq!(d, format!("tcp socket to 127.0.0.1:{port}"));
        let l = w.describe_fd(listener.as_raw_fd()).unwrap();
        assert_eq!(l, format!("tcp listening socket 127.0.0.1:{port}"));
        let f = tempfile::NamedTempFile::new().unwrap();
        let d = w.describe_fd(f.as_file().as_raw_fd()).unwrap();
        assert!(d.starts_with("file /"), "{d}");
        // `read(fd, ...)`: the descriptor is the first argument.
        let mem = remoteprocess::Process::new(me as remoteprocess::Pid).unwrap();
        let args = [client.as_raw_fd() as u64, 0, 0, 0, 0, 0];
        assert_eq!(fd_of("recvfrom", &args, &mem), Some(client.as_raw_fd()));
        // `poll(fds, 1, timeout)`: read from memory.
        let pollfd: [i32; 2] = [client.as_raw_fd(), 1];
        let args = [pollfd.as_ptr() as u64, 1, 1000, 0, 0, 0];
        assert_eq!(fd_of("poll", &args, &mem), Some(client.as_raw_fd()));
        assert_eq!(fd_of("futex", &args, &mem), None);
        // A pipe to a child process names the child.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let d = w.describe_fd(out.as_raw_fd()).unwrap();
        assert_eq!(
            d,
            format!("pipe from child process {} (sleep 5)", child.id())
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
