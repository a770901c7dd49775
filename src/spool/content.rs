//! An entry's content as delivery uses it: whole in memory when it is small, otherwise read
//! from its file in chunks while it is sent, so delivering a 35 MB message does not hold
//! 35 MB (per worker) in memory.
//!
//! Invariants:
//! - Content is verified (length and SHA-256 against the envelope) before it is handed out.
//! - A streamed read verifies it again as it goes. [`ContentChunks`] calls its `abort` hook on
//!   a read error, a short read or a checksum mismatch *before* it reports the end, so the
//!   sender (which writes the final dot after the last chunk) cannot finish a message whose
//!   file changed or failed after the first check: the hook breaks the connection instead.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Content up to this size is read whole into memory; larger content is streamed.
pub const IN_MEMORY_LIMIT: u64 = 1024 * 1024;
/// How much of streamed content is kept in memory for the header section (DSNs attach at most
/// 64 KiB of headers).
pub const HEAD_LEN: usize = 64 * 1024;
/// Size of each piece read from the file while streaming.
pub const CHUNK_LEN: usize = 256 * 1024;

/// The content of one spool entry (or of a message built in memory, like a test message).
#[derive(Debug)]
pub struct Content {
    repr: Repr,
}

#[derive(Debug)]
enum Repr {
    Memory(Vec<u8>),
    File {
        path: PathBuf,
        len: u64,
        sha256: String,
        head: Vec<u8>,
        ends_with_crlf: bool,
    },
}

impl Content {
    /// Content held in memory.
    pub fn in_memory(bytes: Vec<u8>) -> Content {
        Content {
            repr: Repr::Memory(bytes),
        }
    }

    /// Content that stays in its file (the first `len` bytes of `path`), already verified
    /// once against `sha256`; `head` is its beginning.
    pub(super) fn in_file(
        path: PathBuf,
        len: u64,
        sha256: String,
        head: Vec<u8>,
        ends_with_crlf: bool,
    ) -> Content {
        Content {
            repr: Repr::File {
                path,
                len,
                sha256,
                head,
                ends_with_crlf,
            },
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match &self.repr {
            Repr::Memory(bytes) => bytes.len() as u64,
            Repr::File { len, .. } => *len,
        }
    }

    /// True for empty content.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the content is streamed from its file rather than held in memory.
    pub fn is_streamed(&self) -> bool {
        matches!(self.repr, Repr::File { .. })
    }

    /// The beginning of the content: all of it when in memory, else the first [`HEAD_LEN`]
    /// bytes (enough for the header section a DSN attaches).
    pub fn head(&self) -> &[u8] {
        match &self.repr {
            Repr::Memory(bytes) => bytes,
            Repr::File { head, .. } => head,
        }
    }

    /// Write all of the content, final CRLF included, to `out`; streamed content is verified
    /// again as it goes. The file is read in the short blocking sections of
    /// [`chunks`](Self::chunks), so async code may call it (export tools, the Graph
    /// transport's request body).
    ///
    /// # Errors
    /// Write errors, or `InvalidData` when the file no longer matches its checksum.
    pub fn write_to(&self, out: &mut dyn io::Write) -> io::Result<()> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let damaged = Arc::new(AtomicBool::new(false));
        let flag = damaged.clone();
        for chunk in self.chunks(Box::new(move || flag.store(true, Ordering::SeqCst)))? {
            out.write_all(&chunk)?;
        }
        if damaged.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the message file changed or could not be read while it was copied",
            ));
        }
        let final_crlf = match &self.repr {
            Repr::Memory(bytes) => bytes.ends_with(b"\r\n"),
            Repr::File { ends_with_crlf, .. } => *ends_with_crlf,
        };
        if final_crlf {
            out.write_all(b"\r\n")?;
        }
        out.flush()
    }

    /// The content in pieces for SMTP DATA, without its final CRLF (the sender's `.` line
    /// supplies it). May be called from async code: the file reads are short blocking
    /// sections (see `blocking_here`).
    ///
    /// `abort` is called (once) if the streamed content cannot be read or does not match its
    /// checksum; the iterator then ends early, and the caller must not let the message count
    /// as sent: `abort` should break the connection so the final dot never arrives.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn chunks(&self, abort: Box<dyn FnMut() + Send>) -> io::Result<ContentChunks<'_>> {
        let source = match &self.repr {
            Repr::Memory(bytes) => Source::Memory(
                bytes
                    .strip_suffix(b"\r\n")
                    .unwrap_or(bytes)
                    .chunks(CHUNK_LEN),
            ),
            Repr::File {
                path,
                len,
                sha256,
                ends_with_crlf,
                ..
            } => Source::File(Box::new(FileSource {
                file: blocking_here(|| File::open(path))?,
                to_send: len.saturating_sub(if *ends_with_crlf { 2 } else { 0 }),
                to_check: if *ends_with_crlf { 2 } else { 0 },
                digest: ring::digest::Context::new(&ring::digest::SHA256),
                expected: sha256.clone(),
                abort,
                done: false,
            })),
        };
        Ok(ContentChunks { source })
    }
}

/// The pieces of a [`Content`], in order (see [`Content::chunks`]).
pub struct ContentChunks<'a> {
    source: Source<'a>,
}

enum Source<'a> {
    Memory(std::slice::Chunks<'a, u8>),
    File(Box<FileSource>),
}

struct FileSource {
    file: File,
    /// Bytes still to be read and yielded.
    to_send: u64,
    /// Bytes after those (the final CRLF) read only to complete the checksum.
    to_check: u64,
    digest: ring::digest::Context,
    expected: String,
    abort: Box<dyn FnMut() + Send>,
    done: bool,
}

impl FileSource {
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        if self.to_send > 0 {
            let want = usize::try_from(self.to_send.min(CHUNK_LEN as u64)).unwrap_or(CHUNK_LEN);
            let mut chunk = vec![0u8; want];
            match read_exact_blocking(&mut self.file, &mut chunk) {
                Ok(()) => {
                    self.digest.update(&chunk);
                    self.to_send -= want as u64;
                    return Some(chunk);
                }
                Err(error) => return self.fail(&format!("cannot read the message: {error}")),
            }
        }
        self.done = true;
        let mut tail = [0u8; 2];
        let tail = tail
            .get_mut(..usize::try_from(self.to_check).unwrap_or(0))
            .unwrap_or_default();
        if let Err(error) = read_exact_blocking(&mut self.file, tail) {
            return self.fail(&format!("cannot read the message: {error}"));
        }
        self.digest.update(tail);
        let digest = crate::vocab::hex::lower(self.digest.clone().finish().as_ref());
        if digest != self.expected {
            return self.fail("the message changed on disk while it was being sent");
        }
        None
    }

    fn fail(&mut self, reason: &str) -> Option<Vec<u8>> {
        tracing::error!(
            reason,
            "streaming a message from the spool failed; the transaction is broken off so that no partial message is delivered"
        );
        self.done = true;
        (self.abort)();
        None
    }
}

impl<'a> Iterator for ContentChunks<'a> {
    type Item = Cow<'a, [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.source {
            Source::Memory(chunks) => chunks.next().map(Cow::Borrowed),
            Source::File(file) => file.next_chunk().map(Cow::Owned),
        }
    }
}

/// `read_exact`, telling the runtime that this thread blocks for a moment.
fn read_exact_blocking(file: &mut File, buf: &mut [u8]) -> io::Result<()> {
    blocking_here(|| file.read_exact(buf))
}

/// Run a short blocking file operation from async code that cannot await it (the chunk
/// iterator is driven by the SMTP client's write loop): on a multi-threaded tokio runtime via
/// `block_in_place`, so other tasks move to another thread meanwhile.
fn blocking_here<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Verify the first `len` bytes of `path` against `sha256` in one streaming pass, keeping the
/// first [`HEAD_LEN`] bytes. Blocking.
pub(super) fn verify_streamed(
    path: &Path,
    len: u64,
    sha256: &str,
) -> Result<Content, super::entry::EntryError> {
    use super::entry::EntryError;
    let mut file = File::open(path)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut head = Vec::with_capacity(HEAD_LEN);
    let mut buffer = vec![0u8; CHUNK_LEN];
    let mut remaining = len;
    let mut last_two = [0u8; 2];
    while remaining > 0 {
        let want = usize::try_from(remaining.min(CHUNK_LEN as u64)).unwrap_or(CHUNK_LEN);
        let piece = buffer.get_mut(..want).unwrap_or_default();
        file.read_exact(piece).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                EntryError::Corrupt("the message file is shorter than its envelope says".into())
            } else {
                EntryError::Io(e)
            }
        })?;
        digest.update(piece);
        let room = HEAD_LEN.saturating_sub(head.len()).min(piece.len());
        head.extend_from_slice(piece.get(..room).unwrap_or_default());
        match piece {
            [.., a, b] => last_two = [*a, *b],
            [b] => last_two = [last_two[1], *b],
            [] => {}
        }
        remaining -= want as u64;
    }
    if crate::vocab::hex::lower(digest.finish().as_ref()) != sha256 {
        return Err(EntryError::Corrupt("content checksum mismatch".into()));
    }
    let ends_with_crlf = len >= 2 && last_two == *b"\r\n";
    Ok(Content::in_file(
        path.to_path_buf(),
        len,
        sha256.to_string(),
        head,
        ends_with_crlf,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn sha(bytes: &[u8]) -> String {
        crate::vocab::hex::lower(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
    }

    /// A file holding `content` followed by trailing bytes (like an entry's trailer).
    fn entry_file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, content).unwrap();
        std::io::Write::write_all(&mut file, b"TRAILER-NOT-CONTENT").unwrap();
        file
    }

    fn counter() -> (Arc<AtomicU32>, Box<dyn FnMut() + Send>) {
        let count = Arc::new(AtomicU32::new(0));
        let hook = Arc::clone(&count);
        (
            count,
            Box::new(move || {
                hook.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    fn large_content() -> Vec<u8> {
        let mut content = b"Subject: big\r\n\r\n".to_vec();
        let mut line = 0u32;
        while content.len() < 3 * CHUNK_LEN + 1000 {
            content.extend_from_slice(format!("line {line} .\r\n").as_bytes());
            line += 1;
        }
        content
    }

    #[test]
    fn streamed_content_comes_back_in_bounded_chunks_without_its_final_crlf() {
        let content = large_content();
        let file = entry_file(&content);
        let streamed = verify_streamed(file.path(), content.len() as u64, &sha(&content)).unwrap();
        assert!(streamed.is_streamed());
        assert_eq!(streamed.len(), content.len() as u64);
        assert_eq!(streamed.head(), &content[..HEAD_LEN]);
        let (aborted, hook) = counter();
        let mut sent = Vec::new();
        for chunk in streamed.chunks(hook).unwrap() {
            assert!(chunk.len() <= CHUNK_LEN);
            sent.extend_from_slice(&chunk);
        }
        assert_eq!(sent, content[..content.len() - 2]);
        assert_eq!(aborted.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn in_memory_content_is_sent_the_same_way() {
        let content = b"Subject: small\r\n\r\nhello\r\n".to_vec();
        let (aborted, hook) = counter();
        let memory = Content::in_memory(content.clone());
        let sent: Vec<u8> = memory
            .chunks(hook)
            .unwrap()
            .flat_map(|c| c.to_vec())
            .collect();
        assert_eq!(sent, content[..content.len() - 2]);
        assert_eq!(aborted.load(Ordering::SeqCst), 0);
        assert_eq!(memory.head(), content);
    }

    #[test]
    fn a_file_changed_after_verification_aborts_before_the_end() {
        let content = large_content();
        let file = entry_file(&content);
        let streamed = verify_streamed(file.path(), content.len() as u64, &sha(&content)).unwrap();
        // One byte changes in the last chunk after the first check.
        let mut changed = content.clone();
        let at = changed.len() - 10;
        changed[at] = b'#';
        std::fs::write(file.path(), &changed).unwrap();
        let (aborted, hook) = counter();
        let chunks: Vec<_> = streamed.chunks(hook).unwrap().collect();
        assert_eq!(aborted.load(Ordering::SeqCst), 1, "abort before the end");
        // Every chunk was yielded (the change is only known at the end), then abort, then None.
        assert_eq!(chunks.len(), content.len().div_ceil(CHUNK_LEN));
    }

    #[test]
    fn a_file_cut_short_aborts() {
        let content = large_content();
        let file = entry_file(&content);
        let streamed = verify_streamed(file.path(), content.len() as u64, &sha(&content)).unwrap();
        std::fs::write(file.path(), &content[..CHUNK_LEN + 5]).unwrap();
        let (aborted, hook) = counter();
        let sent: usize = streamed.chunks(hook).unwrap().map(|c| c.len()).sum();
        assert_eq!(aborted.load(Ordering::SeqCst), 1);
        assert_eq!(sent, CHUNK_LEN, "only the whole chunks that could be read");
    }

    #[test]
    fn write_to_gives_back_every_byte_and_refuses_a_changed_file() {
        let bytes = large_content();
        let file = entry_file(&bytes);
        let content = verify_streamed(file.path(), bytes.len() as u64, &sha(&bytes)).unwrap();
        let mut out = Vec::new();
        content.write_to(&mut out).unwrap();
        assert_eq!(out, bytes);
        let mut out = Vec::new();
        Content::in_memory(b"a\r\nb\r\n".to_vec())
            .write_to(&mut out)
            .unwrap();
        assert_eq!(out, b"a\r\nb\r\n");

        let mut changed = bytes.clone();
        changed[10] ^= 1;
        std::fs::write(file.path(), &changed).unwrap();
        let error = content.write_to(&mut Vec::new()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn verification_refuses_damaged_or_short_content() {
        let content = large_content();
        let file = entry_file(&content);
        let mut wrong = content.clone();
        wrong[5] = b'X';
        assert!(matches!(
            verify_streamed(file.path(), content.len() as u64, &sha(&wrong)),
            Err(super::super::entry::EntryError::Corrupt(_))
        ));
        assert!(matches!(
            verify_streamed(file.path(), content.len() as u64 + 100, &sha(&content)),
            Err(super::super::entry::EntryError::Corrupt(_))
        ));
    }
}
