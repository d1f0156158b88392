//! `process_*` metrics read from `/proc/self` at scrape time, with the names
//! and meanings of the Prometheus client libraries' process collectors
//! (open/max fds, resident/virtual memory, start time, CPU seconds, threads).
//! Linux only: elsewhere the families are simply absent.

/// One scrape's worth of process figures; `None` where `/proc` could not say.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub resident_bytes: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub threads: Option<u64>,
}

/// Read the current figures. Never fails: missing pieces are `None`.
pub fn read() -> ProcessStats {
    let mut p = ProcessStats {
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds: std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|t| max_open_files(&t)),
        ..Default::default()
    };
    // SAFETY: sysconf only reads a configuration value.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| boot_time(&t));
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    if let Some(f) = stat_fields(&stat) {
        let field = |n: usize| f.get(n).and_then(|v| v.parse::<u64>().ok());
        if ticks > 0 {
            let t = ticks as f64;
            if let (Some(u), Some(s)) = (field(13), field(14)) {
                p.cpu_seconds = Some((u + s) as f64 / t);
            }
            if let (Some(start), Some(boot)) = (field(21), boot) {
                p.start_time_seconds = Some(boot as f64 + start as f64 / t);
            }
        }
        p.threads = field(19);
        p.virtual_bytes = field(22);
        if page > 0 {
            p.resident_bytes = field(23).map(|pages| pages * page as u64);
        }
    }
    p
}

/// The fields of `/proc/self/stat`, numbered from 0 (pid) as in proc(5) minus one.
/// The command name (field 1) may hold spaces and parentheses: split after the last `)`.
fn stat_fields(text: &str) -> Option<Vec<&str>> {
    let close = text.rfind(')')?;
    let (head, rest) = text.split_at(close);
    let pid = head.split_whitespace().next()?;
    let mut v = vec![pid, "comm"];
    v.extend(rest.get(1..)?.split_whitespace());
    Some(v)
}

fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn max_open_files(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    // "Max open files  1024  4096  files": the soft limit is the one enforced.
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 123456 789 18446744073709551615";
        let f = stat_fields(stat).unwrap();
        assert_eq!(f[0], "42");
        assert_eq!(f[2], "S");
        assert_eq!(f[13], "250");
        assert_eq!(f[14], "50");
        assert_eq!(f[19], "7");
        assert_eq!(f[21], "1000");
        assert_eq!(f[22], "123456");
        assert_eq!(f[23], "789");
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit Soft Hard Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn reads_this_process() {
        let p = read();
        assert!(p.open_fds.is_some_and(|n| n > 0));
        assert!(p.threads.is_some_and(|n| n >= 1));
        assert!(p.resident_bytes.is_some_and(|n| n > 0));
        assert!(p.start_time_seconds.is_some_and(|t| t > 1e9));
    }
}
