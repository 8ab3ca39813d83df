//! Process measurements for tests that bound memory (e.g. a 1 GB body through the gateway).

use std::io;

/// Resident set size of process `pid` in KiB, from `VmRSS` in `/proc/<pid>/status`
/// (Linux only).
///
/// # Errors
/// If the process does not exist or the file has no `VmRSS` line (e.g. a zombie).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no VmRSS line in /proc/{pid}/status"),
        )
    })
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    // "VmRSS:	   12345 kB"
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tcat\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(1234));
        assert_eq!(parse_vm_rss("Name:\tzombie\n"), None);
    }

    #[test]
    fn reads_own_rss() {
        let rss = rss_kib(std::process::id()).unwrap();
        assert!(rss > 0);
    }
}
