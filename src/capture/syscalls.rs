//! System call numbers → names, for what `/proc/<pid>/task/<tid>/syscall` reports.
//!
//! Only the calls a blocked Python thread is plausibly sitting in are named (sleep, I/O,
//! sockets, locks, child processes, disk); any other number is recorded as `syscall_<nr>` so
//! nothing is lost. Numbers are per architecture.

#[cfg(target_arch = "x86_64")]
const TABLE: &[(i64, &str)] = &[
    (0, "read"),
    (1, "write"),
    (2, "open"),
    (3, "close"),
    (4, "stat"),
    (5, "fstat"),
    (6, "lstat"),
    (7, "poll"),
    (8, "lseek"),
    (9, "mmap"),
    (11, "munmap"),
    (12, "brk"),
    (16, "ioctl"),
    (17, "pread64"),
    (18, "pwrite64"),
    (19, "readv"),
    (20, "writev"),
    (21, "access"),
    (23, "select"),
    (24, "sched_yield"),
    (26, "msync"),
    (34, "pause"),
    (35, "nanosleep"),
    (40, "sendfile"),
    (41, "socket"),
    (42, "connect"),
    (43, "accept"),
    (44, "sendto"),
    (45, "recvfrom"),
    (46, "sendmsg"),
    (47, "recvmsg"),
    (56, "clone"),
    (57, "fork"),
    (58, "vfork"),
    (59, "execve"),
    (61, "wait4"),
    (65, "semop"),
    (72, "fcntl"),
    (73, "flock"),
    (74, "fsync"),
    (75, "fdatasync"),
    (76, "truncate"),
    (77, "ftruncate"),
    (78, "getdents"),
    (82, "rename"),
    (83, "mkdir"),
    (87, "unlink"),
    (162, "sync"),
    (202, "futex"),
    (208, "io_getevents"),
    (217, "getdents64"),
    (219, "restart_syscall"),
    (230, "clock_nanosleep"),
    (232, "epoll_wait"),
    (247, "waitid"),
    (257, "openat"),
    (262, "newfstatat"),
    (263, "unlinkat"),
    (270, "pselect6"),
    (271, "ppoll"),
    (277, "sync_file_range"),
    (281, "epoll_pwait"),
    (285, "fallocate"),
    (288, "accept4"),
    (295, "preadv"),
    (296, "pwritev"),
    (299, "recvmmsg"),
    (306, "syncfs"),
    (307, "sendmmsg"),
    (318, "getrandom"),
    (326, "copy_file_range"),
    (332, "statx"),
    (426, "io_uring_enter"),
    (435, "clone3"),
    (441, "epoll_pwait2"),
];

#[cfg(target_arch = "aarch64")]
const TABLE: &[(i64, &str)] = &[
    (17, "getcwd"),
    (22, "epoll_pwait"),
    (25, "fcntl"),
    (29, "ioctl"),
    (32, "flock"),
    (35, "unlinkat"),
    (45, "truncate"),
    (46, "ftruncate"),
    (47, "fallocate"),
    (56, "openat"),
    (57, "close"),
    (61, "getdents64"),
    (63, "read"),
    (64, "write"),
    (65, "readv"),
    (66, "writev"),
    (67, "pread64"),
    (68, "pwrite64"),
    (71, "sendfile"),
    (72, "pselect6"),
    (73, "ppoll"),
    (79, "newfstatat"),
    (80, "fstat"),
    (81, "sync"),
    (82, "fsync"),
    (83, "fdatasync"),
    (84, "sync_file_range"),
    (95, "waitid"),
    (98, "futex"),
    (101, "nanosleep"),
    (115, "clock_nanosleep"),
    (124, "sched_yield"),
    (128, "restart_syscall"),
    (198, "socket"),
    (202, "accept"),
    (203, "connect"),
    (206, "sendto"),
    (207, "recvfrom"),
    (211, "sendmsg"),
    (212, "recvmsg"),
    (220, "clone"),
    (221, "execve"),
    (242, "accept4"),
    (243, "recvmmsg"),
    (260, "wait4"),
    (269, "sendmmsg"),
    (278, "getrandom"),
    (291, "statx"),
    (426, "io_uring_enter"),
    (435, "clone3"),
    (441, "epoll_pwait2"),
];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const TABLE: &[(i64, &str)] = &[];

/// The name of system call `nr` on this architecture, or `syscall_<nr>`.
pub fn name(nr: i64) -> String {
    match TABLE.binary_search_by_key(&nr, |(n, _)| *n) {
        Ok(i) => TABLE[i].1.to_owned(),
        Err(_) => format!("syscall_{nr}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_for_binary_search() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn names_the_calls_a_blocked_loop_sits_in() {
        assert_eq!(name(230), "clock_nanosleep");
        assert_eq!(name(202), "futex");
        assert_eq!(name(61), "wait4");
        assert_eq!(name(232), "epoll_wait");
        assert_eq!(name(9999), "syscall_9999");
    }
}
