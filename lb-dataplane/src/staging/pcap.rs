//! A reader of classic pcap files (not pcapng), Ethernet captures only. The
//! frames are replayed through the program one by one, so the reader streams
//! and a large capture never sits in memory whole.

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use super::error::StagingError;

/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u32 = 1;
/// A record claiming more than this is a corrupt file, not a frame (tcpdump's
/// largest snap length is 262144).
const MAX_RECORD_LEN: u32 = 1 << 18;

pub struct PcapReader<R> {
    input: R,
    path: PathBuf,
    /// Offset of the next unread byte, for error messages.
    offset: u64,
    big_endian: bool,
}

impl<R: Read> PcapReader<R> {
    /// Read and check the 24-byte global header.
    pub fn new(input: R, path: &Path) -> Result<Self, StagingError> {
        let mut reader = Self {
            input,
            path: path.to_path_buf(),
            offset: 0,
            big_endian: false,
        };
        let mut h = [0u8; 24];
        if reader.fill(&mut h)? < h.len() {
            return Err(reader.error(0, "shorter than a pcap header (24 bytes)"));
        }
        reader.big_endian = match h[..4] {
            [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => false,
            [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => true,
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                return Err(reader.error(
                    0,
                    "a pcapng file; only classic pcap is read (convert it with \
                     `editcap -F pcap IN OUT` or `tcpdump -r IN -w OUT`)",
                ));
            }
            _ => return Err(reader.error(0, "not a pcap file (unknown magic number)")),
        };
        // The upper bits may carry FCS information; the link type is the low 16.
        let linktype = reader.u32(&h[20..24]) & 0xffff;
        if linktype != LINKTYPE_ETHERNET {
            let hint = if matches!(linktype, 113 | 276) {
                " (Linux cooked capture: capture on the interface, not on `any`)"
            } else {
                ""
            };
            let reason = format!("link type {linktype} is not Ethernet (1){hint}");
            return Err(reader.error(20, &reason));
        }
        Ok(reader)
    }

    /// The next frame into `buf` (replacing its contents); false at the end
    /// of the file.
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) -> Result<bool, StagingError> {
        let start = self.offset;
        let mut h = [0u8; 16];
        match self.fill(&mut h)? {
            0 => return Ok(false),
            16 => {}
            _ => return Err(self.error(start, "truncated record header")),
        }
        let len = self.u32(&h[8..12]);
        if len > MAX_RECORD_LEN {
            let reason = format!("record length {len} is larger than any frame");
            return Err(self.error(start + 8, &reason));
        }
        buf.resize(len as usize, 0);
        if self.fill(buf)? < buf.len() {
            let reason = format!("truncated record: {len} bytes announced");
            return Err(self.error(start, &reason));
        }
        Ok(true)
    }

    /// Byte offset of the next record (after `next_frame`: of the one after
    /// the frame it returned).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let b = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// Read until `buf` is full or the file ends; how many bytes were read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, StagingError> {
        let mut done = 0;
        while done < buf.len() {
            match self.input.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.error(self.offset + done as u64, &e.to_string())),
            }
        }
        self.offset += done as u64;
        Ok(done)
    }

    fn error(&self, offset: u64, reason: &str) -> StagingError {
        StagingError::Pcap {
            path: self.path.clone(),
            offset,
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap of `frames` in the given byte order (microsecond magic).
    fn pcap(big_endian: bool, linktype: u32, frames: &[&[u8]]) -> Vec<u8> {
        let w = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend_from_slice(&w(0xa1b2_c3d4));
        out.extend_from_slice(&w(0x0004_0002)[..]); // version: fine either way
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&w(65535));
        out.extend_from_slice(&w(linktype));
        for f in frames {
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&w(f.len() as u32));
            out.extend_from_slice(&w(f.len() as u32));
            out.extend_from_slice(f);
        }
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Vec<u8>>, StagingError> {
        let mut r = PcapReader::new(bytes, Path::new("x.pcap"))?;
        let mut frames = Vec::new();
        let mut buf = Vec::new();
        while r.next_frame(&mut buf)? {
            frames.push(buf.clone());
        }
        Ok(frames)
    }

    fn error_of(bytes: &[u8]) -> String {
        read_all(bytes).unwrap_err().to_string()
    }

    #[test]
    fn reads_both_byte_orders() {
        let frames: [&[u8]; 2] = [&[1, 2, 3], &[4; 60]];
        for be in [false, true] {
            let got = read_all(&pcap(be, 1, &frames)).unwrap();
            assert_eq!(got, frames.map(|f| f.to_vec()));
        }
    }

    #[test]
    fn reads_nanosecond_files() {
        let mut bytes = pcap(false, 1, &[&[9; 20]]);
        bytes[..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        assert_eq!(read_all(&bytes).unwrap(), vec![vec![9; 20]]);
    }

    #[test]
    fn bad_files_name_the_file_and_offset() {
        assert_eq!(
            error_of(&[0; 10]),
            "x.pcap: byte 0: shorter than a pcap header (24 bytes)"
        );
        let mut ng = pcap(false, 1, &[]);
        ng[..4].copy_from_slice(&[0x0a, 0x0d, 0x0d, 0x0a]);
        assert!(error_of(&ng).contains("pcapng"));
        assert!(error_of(&pcap(false, 113, &[])).starts_with("x.pcap: byte 20: link type 113"));

        let good = pcap(false, 1, &[&[1; 30], &[2; 30]]);
        // The second record's header starts at 24 + 16 + 30 = 70.
        assert_eq!(
            error_of(&good[..75]),
            "x.pcap: byte 70: truncated record header"
        );
        assert_eq!(
            error_of(&good[..good.len() - 1]),
            "x.pcap: byte 70: truncated record: 30 bytes announced"
        );
        let mut huge = good.clone();
        huge[70 + 8..70 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(error_of(&huge).starts_with("x.pcap: byte 78: record length 4294967295"));
    }
}
