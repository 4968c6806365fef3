"""A base for storage strategies whose disks are files on a datastore: preserve, remove the
template disks, swap, verify, clean up and roll back are written once here; a strategy says
only how ``X_BACK`` gets to the target datastore (:meth:`DatastoreStrategy.transfer`, usually
through :meth:`DatastoreStrategy.copy_disks`).

Destructive steps check their precondition first:

* ``preserve_disks`` only once the domain is gone from the source host;
* ``remove_new_disks`` only on a target host the control plane accepts
  (:meth:`~rehost.core.strategies.ControlPlane.guard_target`) where the new domain is off, and
  never before the user's disk has arrived there;
* ``swap_disks`` never overwrites a file;
* ``cleanup`` deletes ``X_BACK`` only after ``verify`` passed, and only when asked;
* a rollback puts a disk back only after it was found to be the user's.

Options (``[storage.options]``): ``checksum`` (md5, sha1, sha256; default sha1), ``verify``
(``checksum``: the disk's content at both ends; ``size``: the size and ``samples`` sampled 1 MiB
blocks), ``digest`` (``sparse``, the default for md5 and sha1: the content digest of
:data:`DIGEST_PY`, which hashes only the blocks that are not all zero; ``whole``, the default for
sha256: the tool's checksum of every byte).

The sparse digest (``sparse-sha1``, ``sparse-md5``) is a digest of the disk's whole content: each
64 KiB block that is not all zero is hashed with its number, then the file's size. Two files have
the same one exactly when they hold the same bytes, however their holes are laid out, so a copy
is compared with the user's disk as with a plain checksum; reading it costs the disk's data, not
its virtual size (the holes are skipped where the system says where they are, read and found
zero where it does not). A copy whose strategy streams it (``tar``) is checked from the stream
itself: the target host computes the digest of what it receives while it unpacks it
(:meth:`DatastoreStrategy.digest_unpack_argv`), with no second read.

A qcow2 disk with a backing file (:func:`backing_chain`) is moved with its backing files: a
copying strategy (``backing_files = "copy"``) brings each one to the same path on the target
host when it is not there, and checks it (or the one found there) against the source host's
before the disk is copied; ``"check"`` (``shared``) only checks; ``"refuse"`` (the default for a
subclass) refuses such a VM in ``check_vm``, before it is powered off.
"""

from __future__ import annotations

import json
import posixpath
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rehost.core.errors import ConfigError, PreconditionError, RehostError, RemoteError
from rehost.core.remote import quote_argv
from rehost.core.strategies import StorageStrategy
from rehost.core.types import (
    VM,
    CleanupResult,
    Context,
    Disk,
    DiskCheck,
    Finding,
    Host,
    PrecopyResult,
    PreservedDisk,
    PreserveResult,
    RemovedDisk,
    RemoveNewDisksResult,
    Sample,
    StagedDisk,
    SwappedDisk,
    SwapResult,
    TransferResult,
    VerifyResult,
)

if TYPE_CHECKING:
    from rehost.core.remote import Shell

BACK_SUFFIX = "_BACK"
#: a disk ``X`` pre-copied while its VM ran is staged on the target host as ``X`` + this
#: (never the name of the user's disk, of its backup, or of what a deploy puts at ``X``)
STAGING_SUFFIX = ".rehost-precopy"

#: the block size of verify = "size" samples
SAMPLE_BLOCK = 1 << 20

#: Paths a remote shell reads as plain words (no quoting needed, none possible to get wrong):
#: for tools such as scp whose remote path goes through a shell on one protocol and not on
#: the other.
SHELL_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+@%=:,-]*$")


#: the prefix of a sparse digest's name (``sparse-sha1``): see the module
SPARSE = "sparse-"

#: The sparse digest, run by the first Python a host has (Python 2.4, CentOS 5's, to 3.x):
#: ``probe ALGO`` (can this host compute it), ``file ALGO PATH`` (a file's digest and size),
#: ``untar ALGO NAME ARGV...`` (run ARGV, a tar that unpacks stdin, and pass it stdin, a GNU tar
#: stream that must hold the one file NAME; nothing is passed on before NAME's headers are
#: checked; print the digest and size of the file as it flowed). Exit status 3: refused (the
#: message says why); otherwise the unpacker's own. ``unpack ALGO FOLDER NAME``: the same
#: stream written by the script itself as ``tar -xp`` would (FOLDER/NAME replaced, its holes
#: kept, its mode, owner and times from the stream), one process less in the copy's path.
DIGEST_PY = r'''import os, struct, sys, time
B = 65536
CH = 16 * B
NUL = '\0'.encode('ascii')
ZB = open('/dev/zero', 'rb').read(CH)
ZBLK = ZB[:B]
EMPTY = ZB[:0]
MAGIC = 'rehost-sparse-digest-1 65536\n'.encode('ascii')


class Bad(Exception):
    pass


def new(algo):
    try:
        import hashlib
        return hashlib.new(algo)
    except ImportError:
        pass
    if algo == 'sha1':
        import sha
        return sha.new()
    if algo == 'md5':
        import md5
        return md5.new()
    raise Bad('this python has no ' + algo)


class Digest:
    """Hash of a file's content that skips its zero blocks: each 64 KiB block that is not all
    zero is hashed with its number, then the file's size."""

    def __init__(self, algo, size):
        self.h = new(algo)
        self.h.update(MAGIC)
        self.size = size
        self.cur = -1
        self.parts = []
        self.fill = 0

    def put(self, off, data):
        n = len(data)
        if off < 0 or off + n > self.size:
            raise Bad('data beyond the end of the file')
        k = 0
        while k < n:
            at = off + k
            i = at // B
            start = at - i * B
            take = min(B - start, n - k)
            if take == n:
                piece = data
            else:
                piece = data[k:k + take]
            k = k + take
            if i != self.cur:
                if i < self.cur:
                    raise Bad('data out of order')
                self.flush()
                self.cur = i
                self.fill = 0
            elif start < self.fill:
                raise Bad('data out of order')
            if take == B:
                zero = ZBLK
            else:
                zero = ZB[:take]
            if piece == zero:
                continue
            if start > self.fill:
                self.parts.append(ZB[:start - self.fill])
            self.parts.append(piece)
            self.fill = start + take

    def flush(self):
        if self.parts:
            length = min(B, self.size - self.cur * B)
            if self.fill < length:
                self.parts.append(ZB[:length - self.fill])
            self.h.update(struct.pack('>Q', self.cur))
            if len(self.parts) == 1:
                self.h.update(self.parts[0])
            else:
                self.h.update(EMPTY.join(self.parts))
            self.parts = []

    def hexdigest(self):
        self.flush()
        self.h.update(struct.pack('>Q', self.size))
        return self.h.hexdigest()


def data_ranges(fd, size):
    """Where a file may hold data: its data extents where the system says (SEEK_DATA), else
    the whole file."""
    seek_data = getattr(os, 'SEEK_DATA', None)
    seek_hole = getattr(os, 'SEEK_HOLE', None)
    if seek_data is None or seek_hole is None:
        return [(0, size)]
    out = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, seek_data)
        except OSError:
            if sys.exc_info()[1].errno == 6:  # ENXIO: no data after pos
                break
            return [(0, size)]
        end = os.lseek(fd, start, seek_hole)
        out.append((start, min(end, size)))
        pos = end
    return out


def chunks_of(fd, size, path):
    """(offset, bytes) of the file's data ranges, in whole 64 KiB blocks, each read once, in
    order, at most CH bytes a piece."""
    pos = 0
    for start, end in data_ranges(fd, size):
        start = max(pos, (start // B) * B)
        end = min(size, -(-end // B) * B)
        if start >= end:
            continue
        os.lseek(fd, start, 0)
        pos = start
        while pos < end:
            data = os.read(fd, min(CH, end - pos))
            if not data:
                raise Bad('%s is shorter than its size' % path)
            yield pos, data
            pos = pos + len(data)


def digest_file(algo, path):
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    dig = Digest(algo, size)
    for pos, data in chunks_of(fd, size, path):
        if data != ZB[:len(data)]:
            dig.put(pos, data)
    os.close(fd)
    return dig.hexdigest(), size


def num(field):
    """A number of a tar header: octal, or GNU's base-256."""
    first = ord(field[0:1])
    if first & 0x80:
        if first & 0x40:
            raise Bad('a negative number in a tar header')
        value = first & 0x3f
        for k in range(1, len(field)):
            value = value * 256 + ord(field[k:k + 1])
        return value
    text = field.split(NUL)[0].strip()
    if not text:
        return 0
    return int(text, 8)


def cstr(field):
    return field.split(NUL)[0]


class Stream:
    """The bytes of stdin, each passed on to ``sink`` once read."""

    def __init__(self, sink):
        self.sink = sink
        self.buf = EMPTY
        self.held = []  # nothing is passed on before the file's headers are checked

    def read(self):
        data = os.read(0, CH)
        if data:
            if self.held is None:
                self.sink(data)
            else:
                self.held.append(data)
        return data

    def release(self):
        held, self.held = self.held, None
        for data in held:
            self.sink(data)

    def some(self, n):
        if not self.buf:
            data = self.read()
            if not data:
                raise Bad('the stream ended early')
            self.buf = data
        if n >= len(self.buf):
            out = self.buf
            self.buf = EMPTY
        else:
            out = self.buf[:n]
            self.buf = self.buf[n:]
        return out

    def take(self, n):
        parts = []
        while n > 0:
            data = self.some(n)
            parts.append(data)
            n = n - len(data)
        return EMPTY.join(parts)

    def rest_is_zero(self):
        count = len(self.buf)
        if self.buf != ZB[:count]:
            return -1
        while 1:
            data = self.read()
            if not data:
                return count
            if data != ZB[:len(data)]:
                return -1
            count = count + len(data)


def header_ok(hdr):
    vals = struct.unpack('512B', hdr)
    unsigned = sum(vals[:148]) + 256 + sum(vals[156:])
    signed = sum(struct.unpack('148b', hdr[:148])) + 256 + sum(struct.unpack('356b', hdr[156:]))
    want = num(hdr[148:156])
    return want == unsigned or want == signed


def sparse_map(hdr, src):
    segs = []
    blk, at, count = hdr, 386, 4
    more = hdr[482:483] != NUL
    while 1:
        for k in range(count):
            entry = blk[at + 24 * k:at + 24 * k + 24]
            if entry[0:1] == NUL:
                break
            segs.append((num(entry[:12]), num(entry[12:])))
        if not more:
            return segs
        blk = src.take(512)
        at, count = 0, 21
        more = blk[504:505] != NUL


def read_member(algo, name, src, opener=None):
    """Parse the one file of a GNU tar stream; returns its digest, its size and its header.
    ``opener()``, called once the headers are checked, returns a file descriptor the data
    is written to, each segment at its offset (None: nowhere)."""
    longname = None
    while 1:
        hdr = src.take(512)
        if hdr == ZB[:512]:
            raise Bad('the stream holds no file')
        if not header_ok(hdr):
            raise Bad('a tar header with a wrong checksum')
        if hdr[257:265] != 'ustar  \0'.encode('ascii'):
            raise Bad('not a GNU tar stream')
        kind = hdr[156:157]
        size = num(hdr[124:136])
        if kind == 'L'.encode('ascii'):
            longname = cstr(src.take(size))
            src.take(-size % 512)
            continue
        member = longname or cstr(hdr[:100])
        if member != name:
            raise Bad('the stream holds another file')
        if kind in ('0'.encode('ascii'), NUL):
            realsize = size
            segs = [(0, size)]
        elif kind == 'S'.encode('ascii'):
            realsize = num(hdr[483:495])
            segs = sparse_map(hdr, src)
        else:
            raise Bad('an unexpected member type %r' % kind)
        break
    src.release()
    out = None
    if opener is not None:
        out = opener()
    dig = Digest(algo, realsize)
    stored = 0
    last = 0
    for off, n in segs:
        if off < last or off + n > realsize:
            raise Bad('a sparse map out of order')
        last = off + n
        stored = stored + n
        if out is not None:
            os.lseek(out, off, 0)
        while n > 0:
            data = src.some(min(n, CH))
            dig.put(off, data)
            if out is not None:
                write_all(out, data)
            off = off + len(data)
            n = n - len(data)
    if stored != size:
        raise Bad('a sparse map that does not match the stored data')
    src.take(-size % 512)
    if src.take(512) != ZB[:512]:
        raise Bad('the stream holds more than one file')
    if src.rest_is_zero() < 512:
        raise Bad('the stream does not end as a tar archive ends')
    return dig.hexdigest(), realsize, hdr


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def grow_pipe(fd):
    """A 1 MiB pipe buffer where ``fd`` is a pipe and Linux lets it grow (F_SETPIPE_SZ, 2.6.35
    and later): a 64 KiB one makes a copy stall on every few writes of the process feeding it."""
    try:
        import fcntl
        fcntl.fcntl(fd, 1031, 1048576)
    except (ImportError, IOError, OSError):
        pass


def as_bytes(name):
    if not isinstance(name, type(EMPTY)):
        name = os.fsencode(name)
    return name


def untar(algo, name, argv):
    import subprocess
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
    fd = proc.stdin.fileno()
    state = {'open': 1}

    def sink(data):
        if state['open']:
            try:
                write_all(fd, data)
            except OSError:
                state['open'] = 0  # the unpacker stopped reading: its status tells
            except IOError:
                state['open'] = 0
    grow_pipe(0)
    failure = None
    try:
        result = read_member(algo, name, Stream(sink))[:2]
    except Bad:
        failure = str(sys.exc_info()[1])
    proc.stdin.close()
    code = proc.wait()
    if failure:
        raise Bad(failure)
    if code != 0:
        sys.stderr.write('rehost: %s exited with %d\n' % (argv[0], code))
        sys.exit(code)
    return result


def owner_ids(hdr):
    """The uid and gid a file of a tar header gets, as ``tar -xp`` run by root gives them:
    by the user's and group's names where this host knows them, else by their numbers."""
    import grp
    import pwd
    uid, gid = num(hdr[108:116]), num(hdr[116:124])
    try:
        uid = pwd.getpwnam(cstr(hdr[265:297]).decode('ascii')).pw_uid
    except (KeyError, ValueError, UnicodeError, AttributeError):
        pass
    try:
        gid = grp.getgrnam(cstr(hdr[297:329]).decode('ascii')).gr_gid
    except (KeyError, ValueError, UnicodeError, AttributeError):
        pass
    return uid, gid


def unpack(algo, folder, name):
    """Write the one file ``name`` of the GNU tar stream on stdin into ``folder``, as ``tar
    -xp`` would: an existing file of that name is replaced, nothing is written before the
    headers are checked, the holes stay holes; then the header's owner, mode and time. A
    stream refused part way leaves no file."""
    grow_pipe(0)
    path = os.path.join(folder, name)
    state = {}

    def opener():
        try:
            os.unlink(path)
        except OSError:
            if os.path.lexists(path):
                raise
        state['fd'] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 384)
        return state['fd']
    try:
        digest, size, hdr = read_member(algo, as_bytes(name), Stream(drop), opener)
        fd = state['fd']
        os.ftruncate(fd, size)
        os.close(fd)
    except (Bad, OSError, IOError):
        if 'fd' in state:
            try:
                os.close(state['fd'])
            except OSError:
                pass
            os.unlink(path)
        raise
    if os.geteuid() == 0:  # as tar: only root gives files away
        uid, gid = owner_ids(hdr)
        os.chown(path, uid, gid)
    os.chmod(path, num(hdr[100:108]) & 4095)
    mtime = num(hdr[136:148])
    os.utime(path, (mtime, mtime))
    return digest, size


class Pace:
    """At most ``mib`` MiB a second through :meth:`spend` (0: no limit)."""

    def __init__(self, mib):
        self.rate = float(mib) * 1048576
        self.t0 = time.time()
        self.n = 0

    def spend(self, n):
        if self.rate <= 0:
            return
        self.n = self.n + n
        ahead = self.n / self.rate - (time.time() - self.t0)
        if ahead > 0:
            time.sleep(ahead)


#: the block stream of ``send`` and ``recv``: this line, the file's size ('>Q'), then records
#: ('>BQI': kind, offset, length): 1 data (the bytes follow), 2 zeros, 3 the end
BLOCKS = 'rehost-blocks-1\n'.encode('ascii')
REC = '>BQI'
RECLEN = 13
#: the block sums file of ``recv full``: this line, "N SUM" per block received (N rising),
#: then "end COUNT"
SUMS = 'rehost-sums-1'


class Sums:
    """The block sums file on stdin, read a line at a time (never held whole: a large disk's
    list is large)."""

    def __init__(self):
        self.f = os.fdopen(0, 'rb')
        self.last = -1
        self.count = 0
        if self.f.readline().strip() != SUMS.encode('ascii'):
            raise Bad('no block sums came for the staged copy')

    def next(self):
        """(N, SUM) of the next block listed, or None after the last."""
        parts = self.f.readline().split()
        if len(parts) == 2 and parts[0] == 'end'.encode('ascii'):
            if int(parts[1]) != self.count:
                raise Bad('the block sums are not whole')
            return None
        if len(parts) != 2:
            raise Bad('the block sums are not whole')
        i = int(parts[0])
        if i <= self.last:
            raise Bad('the block sums are out of order')
        self.last = i
        self.count = self.count + 1
        return i, parts[1].decode('ascii')


def blocks_of(fd, size, path):
    """(offset, bytes) of each 64 KiB block that may hold data, in order, each once."""
    for pos, data in chunks_of(fd, size, path):
        k = 0
        while k < len(data):
            yield pos + k, data[k:k + B]
            k = k + B


def block_sum(algo, data):
    h = new(algo)
    h.update(data)
    return h.hexdigest()


def send(algo, path, mib, mode):
    """Write the block stream of ``path`` to stdout: every block holding data (``full``), or
    (``delta``) the blocks whose sum differs from the one the block sums file on stdin lists
    for them (the sums of what was sent before), and zeros for a listed block that holds none
    now. The list and the file are both read in block order, side by side."""
    sums = None
    listed = None
    if mode == 'delta':
        sums = Sums()
        listed = sums.next()
    elif mode != 'full':
        raise Bad('unknown send mode ' + mode)
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    pace = Pace(mib)
    write_all(1, BLOCKS + struct.pack('>Q', size))
    for off, data in blocks_of(fd, size, path):
        i = off // B
        zero = data == ZB[:len(data)]
        if sums is not None:
            while listed is not None and listed[0] < i:
                # it held data when it was sent; it lies in a hole now
                gone = listed[0] * B
                if gone < size:
                    write_all(1, struct.pack(REC, 2, gone, min(B, size - gone)))
                listed = sums.next()
            old = None
            if listed is not None and listed[0] == i:
                old = listed[1]
                listed = sums.next()
            if zero:
                if old is not None:
                    write_all(1, struct.pack(REC, 2, off, len(data)))
                continue
            if block_sum(algo, data) == old:
                continue
        elif zero:
            continue
        write_all(1, struct.pack(REC, 1, off, len(data)))
        write_all(1, data)
        pace.spend(len(data) + RECLEN)
    while listed is not None:
        gone = listed[0] * B
        if gone < size:
            write_all(1, struct.pack(REC, 2, gone, min(B, size - gone)))
        listed = sums.next()
    write_all(1, struct.pack(REC, 3, 0, 0))
    os.close(fd)
    return None


def drop(data):
    pass


def step(items):
    """The next item of an iterator, or None (Python 2.4 has no ``next``)."""
    for item in items:
        return item
    return None


def recv(algo, path, mode, sums_path=None):
    """Apply the block stream on stdin to ``path``: a new sparse file (``full``; the sum of
    each block received goes to the block sums file ``sums_path``, whole or not at all), or the
    file there (``delta``; prints the file's digest and size once written). First line
    printed: "received BYTES SIZE".

    A delta's digest is taken in the same pass as the records are applied: the blocks of the
    file that hold data and that no record replaces are read (the file's data ranges as they
    were before the first write), in block order beside the records, so the file is not read
    again once written."""
    grow_pipe(0)
    src = Stream(drop)
    src.release()
    if src.take(len(BLOCKS)) != BLOCKS:
        raise Bad('not a block stream')
    size = struct.unpack('>Q', src.take(8))[0]
    listing = None
    dig = None
    if mode == 'full':
        if not sums_path:
            raise Bad('recv full: where do the block sums go?')
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 384)
        listing = open(sums_path + '.part', 'wb')
        listing.write((SUMS + '\n').encode('ascii'))
    elif mode == 'delta':
        fd = os.open(path, os.O_WRONLY)
        dig = Digest(algo, size)
    else:
        raise Bad('unknown recv mode ' + mode)
    os.ftruncate(fd, size)
    if dig is not None:
        rfd = os.open(path, os.O_RDONLY)
        staged = blocks_of(rfd, size, path)
        here = step(staged)  # the file's data ranges are taken now, before any write
    count = 0
    got = 0
    last = 0
    while 1:
        kind, off, n = struct.unpack(REC, src.take(RECLEN))
        if kind == 3:
            break
        if off + n > size or n > B:
            raise Bad('a block beyond the end of the file')
        if off < last or off % B:
            raise Bad('the block stream is out of order')
        last = off + n
        if dig is not None:
            while here is not None and here[0] < off:
                dig.put(here[0], here[1])
                here = step(staged)
            if here is not None and here[0] == off:
                here = step(staged)  # replaced by the record
        os.lseek(fd, off, 0)
        if kind == 1:
            data = src.take(n)
            write_all(fd, data)
            got = got + n
            if listing is not None:
                listing.write(('%d %s\n' % (off // B, block_sum(algo, data))).encode('ascii'))
                count = count + 1
            if dig is not None and data != ZB[:n]:
                dig.put(off, data)
        elif kind == 2:
            write_all(fd, ZB[:n])
        else:
            raise Bad('a record of an unknown kind in the block stream')
    os.fsync(fd)
    os.close(fd)
    head = 'received %d %d' % (got, size)
    if listing is not None:
        listing.write(('end %d\n' % count).encode('ascii'))
        listing.flush()
        os.fsync(listing.fileno())
        listing.close()
        os.rename(sums_path + '.part', sums_path)
        return head
    while here is not None:
        dig.put(here[0], here[1])
        here = step(staged)
    os.close(rfd)
    return '%s\n%s %d' % (head, dig.hexdigest(), size)


def throttle(mib):
    """stdin to stdout, at most ``mib`` MiB a second."""
    pace = Pace(mib)
    grow_pipe(0)
    while 1:
        data = os.read(0, CH)
        if not data:
            return None
        write_all(1, data)
        pace.spend(len(data))


def main(args):
    mode, algo = args[0], args[1]
    if mode == 'throttle':
        return throttle(algo)
    new(algo)
    if mode == 'probe':
        return 'ok'
    if mode == 'send':
        return send(algo, args[2], args[3], args[4])
    if mode == 'recv':
        return recv(algo, args[2], args[3], (args[4:] or [None])[0])
    if mode == 'file':
        return '%s %d' % digest_file(algo, args[2])
    if mode == 'untar':
        return '%s %d' % untar(algo, as_bytes(args[2]), args[3:])
    if mode == 'unpack':
        return '%s %d' % unpack(algo, args[2], args[3])
    raise Bad('unknown mode ' + mode)


try:
    said = main(sys.argv[1:])
    if said is not None:
        sys.stdout.write(said + '\n')
except Bad:
    sys.stderr.write('rehost: %s\n' % sys.exc_info()[1])
    sys.exit(3)
except (OSError, IOError, ValueError):
    sys.stderr.write('rehost: %s\n' % sys.exc_info()[1])
    sys.exit(4)
'''

#: ``sh -c`` script: run the Python script ``$1`` with the other arguments, in the first Python
#: the host has
PY_LAUNCH = ('s=$1; shift; for p in python3 python python2; do '
             'if command -v "$p" >/dev/null 2>&1; then exec "$p" -c "$s" "$@"; fi; done; '
             'echo "rehost: no python on this host (python3, python or python2)" >&2; exit 127')


#: ``sh -c`` script on the source host: ``$1`` user@host, ``$2`` the target's command (quoted for
#: its shell), ``$3`` :data:`PY_LAUNCH`, then :data:`DIGEST_PY` and its arguments (a ``send``):
#: the sender's block stream goes through ssh into the target's command, whose output comes back
#: on stdout; the sender's own status comes back through fd 4 (no pipefail on CentOS 5).
BLOCK_PIPE = ('d=$1; r=$2; l=$3; shift 3; exec 3>&1; '
              'st=$( { { sh -c "$l" rehost-digest "$@"; echo "$?" >&4; } '
              '| ssh -o BatchMode=yes -- "$d" "$r" >&3; } 4>&1 ); rc=$?; '
              '[ "$rc" = 0 ] || exit "$rc"; '
              '[ "$st" = 0 ] || { echo "rehost: the sender exited with $st on the source host" '
              '>&2; exit 1; }')

#: the same, for a delta: ``$4`` the command that prints the staged copy's block sums file on
#: the target host (quoted for its shell), piped into the sender
BLOCK_PIPE_DELTA = ('d=$1; r=$2; l=$3; c=$4; shift 4; exec 3>&1; '
                    'st=$( { ssh -o BatchMode=yes -- "$d" "$c" '
                    '| { sh -c "$l" rehost-digest "$@"; echo "$?" >&4; } '
                    '| ssh -o BatchMode=yes -- "$d" "$r" >&3; } 4>&1 ); rc=$?; '
                    '[ "$rc" = 0 ] || exit "$rc"; '
                    '[ "$st" = 0 ] || { echo "rehost: the sender exited with $st on the source '
                    'host" >&2; exit 1; }')

RECEIVED = re.compile(r"^received (\d+) (\d+)$", re.M)


def sums_path(staging: str) -> str:
    """Where the target host keeps the block sums of a staged copy (beside it)."""
    return staging + ".sums"


def staging_path(disk: Disk) -> str:
    """Where a pre-copy stages ``disk`` on the target host: ``X.rehost-precopy``."""
    if not disk.source:
        raise PreconditionError(f"disk {disk.target} has no source path")
    return disk.source + STAGING_SUFFIX


def digest_argv(mode: str, *args: str) -> list[str]:
    """The command that runs :data:`DIGEST_PY` in ``mode`` on a host."""
    return ["sh", "-c", PY_LAUNCH, "rehost-digest", DIGEST_PY, mode, *args]


def content_digest(sh: Shell, path: str, algorithm: str, *, timeout: float = 6 * 3600) -> str:
    """The digest of a file's content on ``sh``'s host: a sparse digest (``sparse-sha1``), or a
    tool's checksum of every byte (``sha1``, ``md5``, ``sha256``)."""
    if algorithm.startswith(SPARSE):
        out = sh.run(digest_argv("file", algorithm[len(SPARSE):], path), timeout=timeout)
        return parse_digest(out.stdout, sh.name, path)
    return sh.checksum(path, algorithm, timeout=timeout)


DIGEST_LINE = re.compile(r"^([0-9a-f]{32,128}) (\d+)$")


def parse_digest(stdout: str, host: str, path: str) -> str:
    """The digest :data:`DIGEST_PY` printed (its last line: digest, size)."""
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    found = DIGEST_LINE.match(lines[-1]) if lines else None
    if found is None:
        raise PreconditionError(f"{path} on {host}: no digest came back ({stdout[-200:]!r})")
    return found.group(1)


def shell_safe(path: str) -> bool:
    """``path`` is absolute, made of characters no shell interprets, no word starts with
    ``-``."""
    return bool(SHELL_SAFE_PATH.match(path)) and "/-" not in path


def backup_path(disk: Disk) -> str:
    """Where the user's disk is kept while the VM moves: ``X`` becomes ``X_BACK``."""
    if not disk.source:
        raise PreconditionError(f"disk {disk.target} has no source path")
    return disk.source + BACK_SUFFIX


def source_host(vm: VM) -> str:
    """The VM's source host (``locate`` found it)."""
    if not vm.source_host:
        raise PreconditionError(f"{vm.name}: its source host is not known (locate first)")
    return vm.source_host


def target_host(vm: VM, ctx: Context) -> str:
    """The VM's target host, once the control plane agrees disks may be put there."""
    if not vm.target_host:
        raise PreconditionError(f"{vm.name}: not deployed on a target host yet")
    ctx.control.guard_target(ctx, vm.target_host)
    return vm.target_host


def same_datastore(one: Shell, other: Shell, path: str) -> bool:
    """Whether two hosts see one file system at ``path``'s folder (a shared datastore): a
    marker written next to it on one host is looked for from the other."""
    marker = f"{path}.rehost-probe-{secrets.token_hex(4)}"
    one.write_text(marker, "probe\n")
    try:
        return other.exists(marker)
    finally:
        one.remove(marker)


#: ``sh -c`` script: ``qemu-img info`` of the image ``$1`` (of format ``$2``; probed when empty).
#: JSON where qemu-img has it (``-U``: also while a running VM holds the image), else the text
#: every qemu-img prints (CentOS 5's: "backing file: B (actual path: /dir/B)").
QEMU_INFO = ('p=$1; if [ -n "$2" ]; then set -- -f "$2" "$p"; else set -- "$p"; fi; '
             'qemu-img info --output=json -U "$@" 2>/dev/null || '
             'qemu-img info --output=json "$@" 2>/dev/null || qemu-img info "$@"')

IMAGE_FORMAT = re.compile(r"^[a-z0-9]{1,16}$")
TEXT_BACKING = re.compile(r"^backing file: (.*?)(?: \(actual path: (.*)\))?$", re.M)
TEXT_BACKING_FORMAT = re.compile(r"^backing file format: (\S+)$", re.M)
NOT_A_FILE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
#: a chain longer than this is refused (a loop, or not a chain a VM of the old hosts has)
MAX_CHAIN = 16


def parse_backing(info: str) -> tuple[str | None, str | None, str | None]:
    """From ``qemu-img info``'s output (JSON, or the text form): the backing file as the image
    names it, its path as qemu resolved it (``None`` when qemu-img did not say), and its
    format (``None`` when not recorded)."""
    text = info.strip()
    if text.startswith("{"):
        data = json.loads(text)
        return (data.get("backing-filename") or None, data.get("full-backing-filename") or None,
                data.get("backing-filename-format") or None)
    found = TEXT_BACKING.search(text)
    if found is None:
        return None, None, None
    fmt = TEXT_BACKING_FORMAT.search(text)
    return found.group(1) or None, found.group(2) or None, fmt.group(1) if fmt else None


def image_backing(sh: Shell, path: str, fmt: str | None) -> tuple[str | None, str | None]:
    """The backing file of the image ``path`` on ``sh``'s host (an absolute path, relative
    names resolved from the image's folder, as qemu does) and its format; ``(None, None)`` for
    an image without one. A backing "file" that is not a file (``nbd:``, ``json:``) is a
    :class:`PreconditionError`."""
    fmt = fmt if fmt and IMAGE_FORMAT.match(fmt) else ""
    arg = path if path.startswith("/") else "./" + path
    out = sh.run(["sh", "-c", QEMU_INFO, "rehost-qemu-img", arg, fmt], timeout=300).stdout
    try:
        name, full, backing_fmt = parse_backing(out)
    except ValueError as exc:
        raise PreconditionError(f"{path} on {sh.name}: qemu-img info gave an answer rehost "
                                f"cannot read: {exc}") from exc
    if name is None:
        return None, None
    resolved = full or name
    if not resolved.startswith("/"):
        if NOT_A_FILE.match(resolved):
            raise PreconditionError(f"{path} on {sh.name}: its backing file {name!r} is not a "
                                    "file rehost can move")
        resolved = posixpath.join(posixpath.dirname(path), resolved)
    return posixpath.normpath(resolved), backing_fmt


def backing_chain(sh: Shell, path: str, fmt: str | None) -> list[str]:
    """The backing files under the image ``path`` on ``sh``'s host, nearest first (none for a
    raw image)."""
    chain: list[str] = []
    image, image_fmt = path, fmt
    while (image_fmt or "").lower() != "raw":
        backing, image_fmt = image_backing(sh, image, image_fmt)
        if backing is None:
            break
        if backing == path or backing in chain or len(chain) >= MAX_CHAIN:
            raise PreconditionError(f"{path} on {sh.name}: its chain of backing files loops "
                                    f"or is longer than {MAX_CHAIN}")
        chain.append(backing)
        image = backing
    return chain


class DatastoreStrategy(StorageStrategy):
    """Base of storage strategies for file disks on datastores (see the module)."""

    name = "datastore"
    #: the copy writes the whole virtual size on the target (space needed is the full size)
    fills_holes = True
    #: seconds between two looks at a copy's progress on the target
    progress_interval = 2.0
    #: what becomes of a disk's backing files: ``copy`` (brought to the target where absent,
    #: checked; the strategy implements :meth:`copy_file`), ``check`` (they must be on the
    #: target already, the same), ``refuse`` (a VM with one is refused before its power-off)
    backing_files = "refuse"
    #: the strategy can pre-copy (``storage.options.precopy = true``): its transfer goes through
    #: :meth:`copy_disks`, which uses what :meth:`precopy` staged
    precopies = False
    #: ``precopy = "auto"`` (the default) pre-copies with this strategy
    precopy_auto = False

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.checksum = str(self.options.pop("checksum", "sha1"))
        if self.checksum not in ("md5", "sha1", "sha256"):
            raise ConfigError(f"storage.options.checksum: choose md5, sha1 or sha256, "
                              f"not {self.checksum!r}")
        self.verify_mode = str(self.options.pop("verify", "checksum"))
        if self.verify_mode not in ("checksum", "size"):
            raise ConfigError(f"storage.options.verify: choose checksum or size, "
                              f"not {self.verify_mode!r}")
        samples = self.options.pop("samples", 16)
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
            raise ConfigError(f"storage.options.samples: a whole number of blocks, 0 or more,"
                              f" not {samples!r}")
        self.samples = samples
        digest = str(self.options.pop("digest", "whole" if self.checksum == "sha256"
                                      else "sparse"))
        if digest not in ("sparse", "whole"):
            raise ConfigError(f"storage.options.digest: choose sparse or whole, not {digest!r}")
        #: the fingerprint's algorithm: ``sparse-sha1`` (see the module) or ``sha1``
        self.content_algorithm = (SPARSE if digest == "sparse" else "") + self.checksum
        precopy = self.options.pop("precopy", "auto")
        if precopy not in (True, False, "auto"):
            raise ConfigError(f'storage.options.precopy: choose true, false or "auto", '
                              f"not {precopy!r}")
        if precopy is True and not self.precopies:
            raise ConfigError(f"storage.options.precopy: the {self.name} strategy does not "
                              "pre-copy (it copies nothing, or not through rehost's copy)")
        #: True, False or "auto" (see :meth:`precopy`)
        self.precopy_mode: bool | str = precopy
        least = self.options.pop("precopy_min_mib", 64)
        if not isinstance(least, int) or isinstance(least, bool) or least < 0:
            raise ConfigError(f"storage.options.precopy_min_mib: a whole number of MiB, 0 or "
                              f"more, not {least!r}")
        self.precopy_min = least << 20
        cap = self.options.pop("bwlimit_mib", 0)
        if not isinstance(cap, (int, float)) or isinstance(cap, bool) or cap < 0:
            raise ConfigError(f"storage.options.bwlimit_mib: MiB a second for each copy (0: no "
                              f"cap), not {cap!r}")
        #: MiB a second each copy may send (0: no cap)
        self.bwlimit = float(cap)
        # backing files: their digests on the source hosts, the copies checked on targets,
        # and one copy at a time of each file to each target (VMs move in parallel)
        self._digests: dict[tuple[str, str, int], str] = {}
        self._checked: dict[tuple[str, str], str] = {}
        self._carrying: dict[tuple[str, str], threading.Lock] = {}
        self._users: dict[str, dict[str, list[tuple[str, str]]]] = {}
        self._lock = threading.Lock()
        self.take_options()
        self.reject_unknown_options()

    def take_options(self) -> None:
        """A subclass pops its own options from ``self.options`` here."""

    # -- preflight ----------------------------------------------------------------------------

    def space_needed(self, ctx: Context, vm: VM, disk: Disk) -> int:
        """Full size when the copy fills holes, allocated size when it keeps them. (A resumed
        campaign finds the disk under its ``_BACK`` name.)"""
        sh = ctx.shell(source_host(vm))
        path = disk.source or ""
        st = sh.stat(path if sh.exists(path) else backup_path(disk))
        return st.size if self.fills_holes else st.allocated

    def preflight(self, ctx: Context) -> list[Finding]:
        """Every host can compute the sparse digest (a Python, 2.4 or later, with the hash)."""
        if not self.content_algorithm.startswith(SPARSE):
            return []
        algorithm = self.content_algorithm[len(SPARSE):]
        out = []
        for host in [*ctx.config.sources(), *ctx.config.targets()]:
            try:
                ctx.shell(host.name).run(digest_argv("probe", algorithm), timeout=60)
            except RemoteError as exc:
                if exc.exit_code == 255:
                    continue  # a host that does not answer: the preflight says so already
                why = (exc.stderr or "").strip().splitlines()[-1:] or [str(exc)]
                out.append(Finding(
                    "critical", "digest",
                    f"{host.name} cannot compute the disks' {self.content_algorithm} "
                    f"digest ({why[0]}): install Python there, or set "
                    'storage.options.digest = "whole"', host=host.name))
        return out

    def check_vm(self, vm: VM, ctx: Context) -> list[Finding]:
        """A disk whose backing files this strategy cannot bring along is refused here,
        before the VM is powered off."""
        out: list[Finding] = []
        for disk in vm.file_disks():
            try:
                for backing in self.backing_of(vm, ctx, disk):
                    out += self.check_backing(vm, ctx, disk, backing)
            except RehostError as exc:
                out.append(Finding("critical", "backing-file",
                                   f"cannot tell the backing files of {disk.source}: {exc}",
                                   vm=vm.label or vm.name))
        if vm.source_host and vm.file_disks():
            try:
                users = self.backing_users(ctx, vm.source_host)
            except RehostError as exc:
                users = {}
                out.append(Finding("warning", "backing-file",
                                   f"cannot tell which disks on {vm.source_host} have backing "
                                   f"files: {exc}", vm=vm.label or vm.name))
            for disk in vm.file_disks():
                others = [(dom, path) for dom, path in users.get(disk.source or "", [])
                          if dom != vm.name]
                if others:
                    out.append(Finding(
                        "critical", "backing-file",
                        f"{disk.source} is the backing file of {others[0][1]} (domain "
                        f"{others[0][0]}): moving it would leave that disk without it",
                        vm=vm.label or vm.name))
        return out

    def backing_users(self, ctx: Context, host: str) -> dict[str, list[tuple[str, str]]]:
        """For each backing file of a disk of a domain defined on ``host``: which domains'
        disks (domain, path) it is under. Read once a run."""
        with self._lock:
            found = self._users.get(host)
        if found is not None:
            return found
        users: dict[str, list[tuple[str, str]]] = {}
        sh, hv = ctx.shell(host), ctx.hypervisor(host)
        for dom in hv.domains():
            for d in hv.disks(dom.name, inactive=True):
                if not d.is_file or not d.source or (d.format or "").lower() == "raw":
                    continue
                try:
                    chain = backing_chain(sh, d.source, d.format)
                except RehostError:
                    continue  # its own VM's check says why
                for backing in chain:
                    users.setdefault(backing, []).append((dom.name, d.source))
        with self._lock:
            self._users[host] = users
        return users

    def backing_of(self, vm: VM, ctx: Context, disk: Disk) -> list[str]:
        """The backing files of a disk, read on the source host (none for a raw disk)."""
        if (disk.format or "").lower() == "raw" or not vm.source_host:
            return []
        sh = ctx.shell(vm.source_host)
        path = disk.source or ""
        image = path if sh.exists(path) else backup_path(disk)
        return backing_chain(sh, image, disk.format)

    def check_backing(self, vm: VM, ctx: Context, disk: Disk, backing: str) -> list[Finding]:
        """Findings about one backing file of a disk (see :attr:`backing_files`)."""
        who = vm.label or vm.name
        src = source_host(vm)
        sh = ctx.shell(src)
        if self.backing_files == "refuse":
            return [Finding("critical", "backing-file",
                            f"{disk.source} has the backing file {backing}, which the "
                            f"{self.name} strategy cannot bring along", vm=who)]
        if not sh.exists(backing):
            return [Finding("critical", "backing-file",
                            f"the backing file {backing} of {disk.source} is not on {src}",
                            vm=who)]
        if sh.run(["test", "-L", backing], check=False).exit_code == 0:
            return [Finding("critical", "backing-file",
                            f"the backing file {backing} of {disk.source} is a symbolic link "
                            f"on {src}: rehost does not carry links; point the disk at the "
                            "file itself", vm=who)]
        if self.backing_files == "check":
            absent = [h.name for h in ctx.config.targets()
                      if not ctx.shell(h.name).exists(backing)]
            if absent:
                return [Finding("critical", "backing-file",
                                f"the backing file {backing} of {disk.source} is not on "
                                f"{', '.join(absent)}: the {self.name} strategy copies "
                                "nothing", vm=who)]
            return [Finding("info", "backing-file",
                            f"{disk.source} has the backing file {backing}: checked on the "
                            "target host", vm=who)]
        refused = self.cannot_carry(backing)
        if refused:
            return [Finding("critical", "backing-file",
                            f"the backing file {backing} of {disk.source}: {refused}", vm=who)]
        return [Finding("info", "backing-file",
                        f"{disk.source} has the backing file {backing}: copied to the same "
                        "path on the target host where it is not there, and checked", vm=who)]

    def cannot_carry(self, path: str) -> str | None:
        """Why this strategy's copy cannot carry ``path`` (``None``: it can)."""
        return None

    # -- stages -------------------------------------------------------------------------------

    def preserve_disks(self, vm: VM, ctx: Context) -> PreserveResult:
        src = source_host(vm)
        if ctx.hypervisor(src).exists(vm.name):
            raise PreconditionError(
                f"{vm.name} is still defined on {src}: will not rename its disks")
        sh = ctx.shell(src)
        out = []
        for disk in vm.file_disks():
            back = backup_path(disk)
            sh.rename(disk.source or "", back)
            out.append(self.fingerprint(sh, disk, back))
        kept = [d.source for d in vm.disks if not d.is_file and d.source]
        return PreserveResult(disks=out, untouched=kept)

    def fingerprint(self, sh: Shell, disk: Disk, back: str) -> PreservedDisk:
        """What later checks compare a copy with: the size, and the checksum or a sample."""
        st = sh.stat(back)
        rec = PreservedDisk(path=disk.source or "", backup=back, size=st.size,
                            virtual_size=virtual_size(sh, back, disk, st.size),
                            allocated=st.allocated, target=disk.target, format=disk.format,
                            owner=f"{st.uid}:{st.gid}")
        if self.verify_mode == "checksum":
            rec.checksum = content_digest(sh, back, self.content_algorithm)
            rec.algorithm = self.content_algorithm
        elif self.samples:
            blocks = sample_blocks(st.size, SAMPLE_BLOCK, self.samples)
            rec.sample = Sample(block=SAMPLE_BLOCK, blocks=blocks,
                                md5=sh.sample_digests(back, SAMPLE_BLOCK, blocks))
        return rec

    def transfer(self, vm: VM, ctx: Context) -> TransferResult:
        raise NotImplementedError(f"storage strategy {self.name!r} has no transfer")

    def remove_new_disks(self, vm: VM, ctx: Context) -> RemoveNewDisksResult:
        tgt = target_host(vm, ctx)
        hv = ctx.hypervisor(tgt)
        if not hv.exists(vm.name):
            raise PreconditionError(f"{vm.name} is not defined on target {tgt}: the disks "
                                    "there are not the new VM's; nothing removed")
        if hv.state(vm.name) == "running":
            raise PreconditionError(f"{vm.name} is running on {tgt}: power it off first")
        sh = ctx.shell(tgt)
        removed, owner = [], None
        for disk in vm.file_disks():
            path = disk.source or ""
            back = backup_path(disk)
            if not sh.exists(back):
                raise PreconditionError(f"{back} is not on {tgt}: the user's disk has not "
                                        "arrived; the template disk stays")
            if sh.exists(path):
                st = sh.stat(path)
                owner = owner or f"{st.uid}:{st.gid}"
                sh.remove(path)
                removed.append(RemovedDisk(path=path, size=st.size, allocated=st.allocated))
        before = vm.fact(RemoveNewDisksResult)
        return RemoveNewDisksResult(removed=removed,
                                    owner=owner or (before.owner if before else None))

    def swap_disks(self, vm: VM, ctx: Context) -> SwapResult:
        tgt = target_host(vm, ctx)
        sh = ctx.shell(tgt)
        removed = vm.fact(RemoveNewDisksResult)
        preserved = vm.fact(PreserveResult)
        swapped = []
        for disk in vm.file_disks():
            path = disk.source or ""
            sh.rename(backup_path(disk), path)
            # the owner of the template disk it replaces (the hypervisor's choice), else the
            # owner the disk had on the source host
            rec = preserved.disk(disk.source) if preserved else None
            owner = (removed.owner if removed else None) or (rec.owner if rec else None)
            if owner:
                sh.chown(path, owner)
            st = sh.stat(path)
            swapped.append(SwappedDisk(path=path, owner=f"{st.owner}:{st.group}", size=st.size))
        return SwapResult(disks=swapped)

    def verify(self, vm: VM, ctx: Context) -> VerifyResult:
        tgt = target_host(vm, ctx)
        state = ctx.hypervisor(tgt).state(vm.name)
        if state != "running":
            raise PreconditionError(f"{vm.name} is {state} on {tgt}, not running")
        checked = [self.matches_user_disk(vm, ctx, tgt, disk, disk.source or "")
                   for disk in vm.file_disks()]
        carried = vm.fact(TransferResult)
        sh = ctx.shell(tgt)
        for item in ((carried.model_extra or {}).get("backing_files") or []) if carried else []:
            if not sh.exists(item["backing"]):
                raise PreconditionError(f"the backing file {item['backing']} of {item['disk']} "
                                        f"is gone from {tgt}")
        method = self.verify_mode
        if method == "size" and checked and all(d.sample_blocks for d in checked):
            method = "size+sample"
        return VerifyResult(ok=True, host=tgt, state=state, disks=checked, method=method)

    def cleanup(self, vm: VM, ctx: Context, delete: bool) -> CleanupResult:
        verified = vm.fact(VerifyResult)
        if not (verified and verified.ok):
            raise PreconditionError(f"{vm.name} is not verified: its backups stay")
        src = source_host(vm)
        sh = ctx.shell(src)
        present = [b for b in (backup_path(d) for d in vm.file_disks()) if sh.exists(b)]
        if not delete:
            return CleanupResult(host=src, pending=present)
        for b in present:
            sh.remove(b)
        return CleanupResult(host=src, deleted=present)

    # -- rollback -----------------------------------------------------------------------------

    def secure_disks(self, vm: VM, ctx: Context, deployed_on: str | None) -> list[str]:
        src = source_host(vm)
        sh = ctx.shell(src)
        other = ctx.shell(deployed_on) if deployed_on and deployed_on != src else None
        swapped = vm.fact(SwapResult) is not None
        steps: list[str] = []
        for disk in vm.file_disks():
            path, back = disk.source or "", backup_path(disk)
            if sh.exists(back):
                continue  # safe on the source datastore
            if swapped and other is not None and other.exists(path):
                # after swap_disks the new VM's disk is the user's: on a shared datastore it
                # is the only copy, and taking the VM away would delete it. Keep it first.
                self.matches_user_disk(vm, ctx, deployed_on or "", disk, path)
                other.rename(path, back)
                if not sh.exists(back):
                    raise PreconditionError(f"{back} is not visible from {src}: the user's "
                                            f"disk is only on {deployed_on}; nothing changed")
                steps.append(f"kept the user's disk as {back} on the shared datastore")
            elif not swapped and sh.exists(path) and (
                    other is None or not same_datastore(sh, other, path)):
                # never preserved: the user's disk is still X on the source host
                sh.rename(path, back)
                steps.append(f"preserved {path} as {back}")
            else:
                raise PreconditionError(f"the user's disk {path} is not safe on {src}: "
                                        "nothing changed")
        if steps and vm.fact(PreserveResult) is None:
            # what preserve_disks would have recorded: the fingerprint later checks use
            vm.facts[PreserveResult.stage] = PreserveResult(
                disks=[self.fingerprint(sh, d, backup_path(d)) for d in vm.file_disks()])
        return steps

    def restore_disks(self, vm: VM, ctx: Context) -> list[str]:
        src = source_host(vm)
        sh = ctx.shell(src)
        owner = None
        for disk in vm.file_disks():
            path, back = disk.source or "", backup_path(disk)
            self.matches_user_disk(vm, ctx, src, disk, back)
            if sh.exists(path):
                st = sh.stat(path)
                owner = f"{st.uid}:{st.gid}"
                sh.remove(path)  # what the control plane put there (a template)
            sh.rename(back, path)
            if owner:
                sh.chown(path, owner)
        return ["the user's disks are back in place"]

    def check_restored(self, vm: VM, ctx: Context) -> list[DiskCheck]:
        src = source_host(vm)
        return [self.matches_user_disk(vm, ctx, src, d, d.source or "") for d in vm.file_disks()]

    def discard_copies(self, vm: VM, ctx: Context, host: str) -> list[str]:
        src = source_host(vm)
        if host == src:
            return []
        there, here = ctx.shell(host), ctx.shell(src)
        steps = []
        for disk in vm.file_disks():
            path = disk.source or ""
            # the user's disk is at its path on the source, checked: the source's own file
            # must not be what the other host sees (a shared datastore)
            if not here.exists(path) or same_datastore(here, there, path):
                continue
            for leftover in (backup_path(disk), path):
                if there.exists(leftover):
                    there.remove(leftover)
                    steps.append(f"removed the copy {leftover} on {host}")
        return steps + self.discard_staging(vm, ctx)

    def discard_staging(self, vm: VM, ctx: Context) -> list[str]:
        """Remove what :meth:`precopy` staged of this VM's disks: the staged copies
        ``X.rehost-precopy`` and their block sums, on the host the stage's record names and on
        every other target host (a pre-copy cut short by a crash records nothing, and a
        resumed one may have staged elsewhere). Only files of those names, never one that a
        domain on that host uses as a disk."""
        if not self.precopies or not vm.file_disks():
            return []
        pre = vm.fact(PrecopyResult)
        hosts = [h.name for h in ctx.config.targets()]
        if pre is not None and pre.host and pre.host not in hosts:
            hosts.insert(0, pre.host)
        staged = [staging_path(d) for d in vm.file_disks()]
        names = [n for st in staged for n in (st, sums_path(st), sums_path(st) + ".part")]
        steps: list[str] = []
        for host in hosts:
            try:
                there = ctx.shell(host)
                found = [n for n, stat in there.probe_paths(names).items() if stat is not None]
                if not found:
                    continue
                used = self._disks_on(ctx, host)
            except RehostError as exc:
                ctx.log.warning("{}: cannot look for staged copies on {}: {}", vm.name, host,
                                exc)
                continue
            for name in found:
                if name in used:
                    ctx.log.warning("{}: {} on {} is a disk of the domain {}: left there",
                                    vm.name, name, host, used[name])
                    continue
                there.remove(name)
                if name.endswith(STAGING_SUFFIX):
                    steps.append(f"removed the staged copy {name} on {host}")
        return steps

    # -- pre-copy -----------------------------------------------------------------------------

    def block_algorithm(self) -> str:
        """The hash of a pre-copy's block sums and of the digest after its delta: the
        fingerprint's when it is a sparse digest, else sha1 (every host's Python has it)."""
        if self.content_algorithm.startswith(SPARSE):
            return self.content_algorithm[len(SPARSE):]
        return "sha1"

    def send_blocks(self, source: Shell, path: str, target: Host, dest: str,
                    mode: str) -> str:
        """Send ``path`` on ``source``'s host to ``dest`` on ``target`` as a block stream of
        :data:`DIGEST_PY`, host to host, at most :attr:`bwlimit` MiB a second: every block
        that holds data into a new sparse file (``full``; the target keeps the sum of each
        block in :func:`sums_path` of ``dest``), or (``delta``) the blocks whose sum is not
        the one that file lists, into the file there. The sums go from the target host to
        the source host directly, never through rehost (a large disk's list is large).
        Returns what the target printed (``full``: "received BYTES SIZE"; ``delta``: that
        line and the digest of ``dest`` once written)."""
        algo = self.block_algorithm()
        dest_at = f"{target.ssh_user}@{target.address}"
        timeout = float(getattr(self, "timeout", 6 * 3600))
        send = [PY_LAUNCH, DIGEST_PY, "send", algo, path, f"{self.bwlimit:g}", mode]
        if mode == "full":
            recv = digest_argv("recv", algo, dest, mode, sums_path(dest))
            return source.run(["sh", "-c", BLOCK_PIPE, "rehost-blocks", dest_at,
                               quote_argv(recv), *send], timeout=timeout).stdout
        recv = digest_argv("recv", algo, dest, mode)
        return source.run(["sh", "-c", BLOCK_PIPE_DELTA, "rehost-blocks", dest_at,
                           quote_argv(recv), send[0], quote_argv(["cat", "--", sums_path(dest)]),
                           *send[1:]], timeout=timeout).stdout

    def precopy_off(self, vm: VM, ctx: Context) -> str | None:
        """Why this VM is not pre-copied (``None``: it is)."""
        if not self.precopies:
            return f"the storage strategy {self.name!r} does not pre-copy"
        if self.precopy_mode is False:
            return "pre-copy is off (storage.options.precopy = false)"
        if self.precopy_mode == "auto" and not self.precopy_auto:
            return (f"pre-copy is not on by default for the {self.name} strategy "
                    "(storage.options.precopy = true turns it on)")
        if not vm.file_disks():
            return "the VM has no file disks"
        if self.precopy_mode == "auto":
            sh = ctx.shell(source_host(vm))
            data = sum(sh.stat(d.source or "").allocated for d in vm.file_disks()
                       if sh.exists(d.source or ""))
            if data < self.precopy_min:
                return (f"its disks hold {data >> 20} MiB, less than "
                        f"storage.options.precopy_min_mib ({self.precopy_min >> 20}): a cold "
                        "copy takes about as long as the delta would")
        return None

    def precopy(self, vm: VM, ctx: Context) -> PrecopyResult:
        """While the VM runs: copy each file disk ``X`` to ``X.rehost-precopy`` on the host
        the control plane predicts it will land on (:meth:`ControlPlane.predict_target`), thin
        as on the source, and keep the sum of each 64 KiB block sent (in the state directory).
        :meth:`copy_disks` then sends only the blocks that changed. A copy that fails leaves
        no staging file."""
        why = self.precopy_off(vm, ctx)
        if why is not None:
            return PrecopyResult(skipped=why, strategy=self.name)
        try:
            host = ctx.control.predict_target(vm, ctx)
        except RehostError as exc:
            return PrecopyResult(skipped=f"no target host can be predicted: {exc}",
                                 strategy=self.name)
        if host is None:
            return PrecopyResult(skipped=f"the control plane {ctx.config.control.strategy!r} "
                                         "cannot tell where the VM will land",
                                 strategy=self.name)
        ctx.control.guard_target(ctx, host)
        src = source_host(vm)
        if host == src:
            return PrecopyResult(skipped=f"the predicted host {host} is its source host",
                                 strategy=self.name)
        source, there = ctx.shell(src), ctx.shell(host)
        target = ctx.host(host)
        foreign = self._disks_on(ctx, host)
        staged: list[StagedDisk] = []
        for disk in vm.file_disks():
            path, staging = disk.source or "", staging_path(disk)
            if not source.exists(path):
                continue  # preserved already (a run that stopped later): nothing to stage
            if staging in foreign:
                return PrecopyResult(skipped=f"{staging} on {host} is a disk of the domain "
                                             f"{foreign[staging]}: nothing staged",
                                     strategy=self.name, host=host, staged=staged)
            there.run(["mkdir", "-p", "--", posixpath.dirname(path)])
            t0 = time.monotonic()
            try:
                out = self.send_blocks(source, path, target, staging, "full")
            except BaseException:
                try:
                    there.remove(staging)
                    there.remove(sums_path(staging))
                except RehostError as exc:
                    ctx.log.warning("{}: the partial staged copy {} on {} stays: {}",
                                    vm.name, staging, host, exc)
                raise
            found = RECEIVED.search(out)
            if found is None or not there.exists(sums_path(staging)):
                there.remove(staging)
                there.remove(sums_path(staging))
                raise PreconditionError(f"{staging} on {host}: the pre-copy did not say what "
                                        f"arrived ({out[-200:]!r})")
            staged.append(StagedDisk(path=path, staging=staging, size=int(found.group(2)),
                                     bytes=int(found.group(1)),
                                     seconds=round(time.monotonic() - t0, 3)))
        return PrecopyResult(host=host, strategy=self.name, staged=staged)

    @staticmethod
    def _disks_on(ctx: Context, host: str) -> dict[str, str]:
        """The file disks of the domains defined on ``host``: path -> domain."""
        hv = ctx.hypervisor(host)
        return {d.source: dom.name for dom in hv.domains()
                for d in hv.disks(dom.name, inactive=True) if d.is_file and d.source}

    def copy_staged(self, vm: VM, ctx: Context, disk: Disk) -> tuple[DiskCheck | None, str]:
        """The transfer of a disk :meth:`precopy` staged: when the VM landed on the host
        holding the staged copy, only the blocks that changed since are sent into it, the
        whole copy's digest is compared with the fingerprint, and it becomes ``X_BACK``
        there. Returns the check, or ``None`` and why the disk is to be copied in full (the
        staged copy is then gone). ``(None, "")``: the disk was not staged."""
        pre = vm.fact(PrecopyResult)
        item = next((s for s in (pre.staged if pre else []) if s.path == disk.source), None)
        if pre is None or item is None or not pre.host:
            return None, ""
        tgt = target_host(vm, ctx)
        if pre.host != tgt:
            note = f"pre-copied to {pre.host} but deployed on {tgt}: copied in full"
            try:
                ctx.shell(pre.host).remove(item.staging)
                ctx.shell(pre.host).remove(sums_path(item.staging))
            except RehostError as exc:
                note += f" (the staged copy {item.staging} there stays: {exc})"
            return None, note
        there = ctx.shell(tgt)
        sums = sums_path(item.staging)
        if not there.exists(item.staging) or not there.exists(sums):
            there.remove(item.staging)
            there.remove(sums)
            return None, f"the staged copy {item.staging} on {tgt} is gone: copied in full"
        back = backup_path(disk)
        t0 = time.monotonic()
        try:
            out = self.send_blocks(ctx.shell(source_host(vm)), back, ctx.host(tgt),
                                   item.staging, "delta")
            check = self._check_staged(vm, ctx, tgt, disk, item.staging, out)
            there.rename(item.staging, back)
            there.remove(sums)
        except PreconditionError as exc:
            there.remove(item.staging)
            there.remove(sums)
            return None, f"the staged copy on {tgt} was not the user's disk after the " \
                         f"delta ({exc}): copied in full"
        except BaseException:
            # a copy cut short: no staged copy is trusted again, nor left behind
            try:
                there.remove(item.staging)
                there.remove(sums)
            except RehostError:
                pass
            raise
        found = RECEIVED.search(out)
        delta = int(found.group(1)) if found else 0
        check.path = back
        check.bytes = delta
        check.seconds = round(time.monotonic() - t0, 3)
        check.precopied = True  # type: ignore[attr-defined]  # extra fields
        check.delta_bytes = delta  # type: ignore[attr-defined]
        check.precopy_bytes = item.bytes  # type: ignore[attr-defined]
        check.precopy = f"pre-copied to {tgt}; the delta sent {delta} bytes"  # type: ignore[attr-defined]
        return check, ""

    def _check_staged(self, vm: VM, ctx: Context, host: str, disk: Disk, staging: str,
                      out: str) -> DiskCheck:
        """The staged copy after its delta is the user's disk: its size, and its digest
        (printed by the target once the delta was written) against the fingerprint; a
        fingerprint of another kind is checked by reading the copy again."""
        preserved = vm.fact(PreserveResult)
        rec = preserved.disk(disk.source) if preserved else None
        if rec is None or not rec.checksum or rec.algorithm != SPARSE + self.block_algorithm():
            return self.matches_user_disk(vm, ctx, host, disk, staging)
        return self._digest_is_user_disk(ctx, host, staging, rec,
                                         parse_digest(out, host, staging), " has",
                                         "after the delta, on the target")

    @staticmethod
    def _digest_is_user_disk(ctx: Context, host: str, path: str, rec: PreservedDisk,
                             digest: str, what: str, checked: str) -> DiskCheck:
        """``path`` on ``host``, whose digest the target computed as the bytes flowed, is the
        user's disk: its size and that digest against the fingerprint ``rec``. ``what`` says
        whose digest it is in the error (" has", ": the bytes that arrived have"); ``checked``
        goes into the check's record."""
        st = ctx.shell(host).stat(path)
        if st.size != rec.size:
            raise PreconditionError(f"{path} on {host} is {st.size} bytes, the user's disk "
                                    f"was {rec.size}")
        if digest != rec.checksum:
            raise PreconditionError(f"{path} on {host}{what} {rec.algorithm} {digest}, the "
                                    f"user's disk had {rec.checksum}")
        out = DiskCheck(path=path, size=st.size, allocated=st.allocated, checksum=digest,
                        algorithm=rec.algorithm)
        out.checked = checked  # type: ignore[attr-defined]  # an extra field
        return out

    # -- helpers for strategies ---------------------------------------------------------------

    def copy_disks(self, vm: VM, ctx: Context,
                   copy_one: Callable[[Shell, str, Host], str | None], *,
                   measure: str = "size") -> TransferResult:
        """The transfer loop every copying strategy shares: for each file disk, bring its
        backing files first (:meth:`carry_backing`), skip a copy an earlier run finished, remove
        a partial one, run ``copy_one(source_shell, path, target_host)`` (which copies ``path``
        to the same path on the target host), report progress while it runs, and check what
        arrived. ``copy_one`` may return the digest, in the fingerprint's algorithm, of the
        bytes the target host received (:meth:`digest_unpack_argv`): the copy is then checked
        with it instead of being read again. ``measure`` is what a byte moved means on the
        target: ``size`` for a copy that fills holes, ``allocated`` for one that keeps them."""
        src, tgt = source_host(vm), target_host(vm, ctx)
        target = ctx.host(tgt)
        preserved = vm.fact(PreserveResult)
        started = time.monotonic()
        copied = []
        carried: list[dict[str, Any]] = []
        for disk in vm.file_disks():
            back = backup_path(disk)
            backing = self.carry_backing(vm, ctx, disk)
            carried += backing
            if ctx.shell(tgt).exists(back):
                try:
                    done = self.check_arrived(vm, ctx, tgt, disk)
                except PreconditionError:
                    ctx.shell(tgt).remove(back)  # a partial copy of an earlier run
                else:
                    done.bytes, done.skipped = 0, "already on the target"
                    copied.append(self._with_backing(done, backing))
                    continue
            staged, note = self.copy_staged(vm, ctx, disk)
            if staged is not None:
                copied.append(self._with_backing(staged, backing))
                continue
            rec = preserved.disk(disk.source) if preserved else None
            total = int((getattr(rec, measure, None) or (rec.size if rec else 0)) or 0)
            t0 = time.monotonic()
            streamed: list[str | None] = []
            self._watch(vm, ctx, tgt, back, total, measure,
                        lambda path=back, out=streamed: out.append(
                            copy_one(ctx.shell(src), path, target)))
            digest = streamed[0] if streamed else None
            if isinstance(digest, str) and rec is not None and rec.checksum:
                arrived = self.check_streamed(vm, ctx, tgt, disk, digest)
            else:
                arrived = self.check_arrived(vm, ctx, tgt, disk)
            arrived.bytes = int(getattr(arrived, measure) or 0)
            arrived.seconds = round(time.monotonic() - t0, 3)
            if note:
                arrived.precopied = False  # type: ignore[attr-defined]  # extra fields
                arrived.precopy = note  # type: ignore[attr-defined]
                ctx.log.warning("{}: {}", vm.name, note)
            copied.append(self._with_backing(arrived, backing))
        result = self.copy_result(copied, started)
        if carried:
            result.backing_files = carried  # type: ignore[attr-defined]  # an extra field
        return result

    @staticmethod
    def _with_backing(check: DiskCheck, backing: list[dict[str, Any]]) -> DiskCheck:
        """``check.backing``: the disk's chain of backing files, nearest first (they were
        brought deepest first)."""
        if backing:
            check.backing = [b["backing"] for b in reversed(backing)]  # type: ignore[attr-defined]
        return check

    def copy_file(self, source: Shell, path: str, target: Host,
                  algorithm: str | None = None) -> str | None:
        """Copy ``path`` from ``source``'s host to the same path on ``target`` (its folder
        exists there). A strategy with ``backing_files = "copy"`` implements it. It may return
        the ``algorithm`` digest of the bytes the target received (when ``algorithm`` is a
        sparse digest and the copy streams through :meth:`digest_unpack_argv`)."""
        raise NotImplementedError(f"storage strategy {self.name!r} cannot copy a single file")

    def stream_algorithm(self, vm: VM, path: str) -> str | None:
        """The sparse digest a streaming copy of ``path`` (a disk's ``X_BACK``) is checked
        with: the fingerprint's algorithm, or ``None`` when the fingerprint has no sparse
        digest (``verify = "size"``, ``digest = "whole"``)."""
        preserved = vm.fact(PreserveResult)
        rec = next((d for d in (preserved.disks if preserved else []) if d.backup == path), None)
        if rec is None or not rec.checksum or not (rec.algorithm or "").startswith(SPARSE):
            return None
        return rec.algorithm

    @staticmethod
    def digest_unpack_argv(unpack: list[str], name: str, algorithm: str) -> list[str]:
        """The command for the target host that runs ``unpack`` (a tar reading a GNU tar
        stream on its stdin: ``tar -C FOLDER -xpf -``) and feeds it stdin through the sparse
        digest: the stream must hold the one file ``name``, and the command prints the
        ``algorithm`` digest of that file as it flowed (:func:`parse_digest` reads it back).
        The stream must be written with ``--format=gnu`` (tar 1.15 and later)."""
        if not algorithm.startswith(SPARSE):
            raise ValueError(f"{algorithm!r} is not a sparse digest")
        return digest_argv("untar", algorithm[len(SPARSE):], name, *unpack)

    @staticmethod
    def digest_write_argv(folder: str, name: str, algorithm: str) -> list[str]:
        """The command for the target host that reads a GNU tar stream holding the one file
        ``name`` on its stdin and writes it into ``folder`` itself, as ``tar -xp`` would
        (replacing a file of that name, holes kept, owner, mode and time from the stream;
        nothing written before the headers are checked, no file left by a stream refused
        part way), printing the ``algorithm`` digest of the file as it flowed
        (:func:`parse_digest` reads it back). The stream must be written with
        ``--format=gnu`` (tar 1.15 and later)."""
        if not algorithm.startswith(SPARSE):
            raise ValueError(f"{algorithm!r} is not a sparse digest")
        return digest_argv("unpack", algorithm[len(SPARSE):], folder, name)

    @staticmethod
    def read_digest(stdout: str, host: str, path: str) -> str:
        """The digest the command of :meth:`digest_unpack_argv` printed on ``host`` for
        ``path`` (its last line); :class:`PreconditionError` when there is none."""
        return parse_digest(stdout, host, path)

    def check_streamed(self, vm: VM, ctx: Context, host: str, disk: Disk,
                       digest: str) -> DiskCheck:
        """The copy of ``X_BACK`` on ``host`` is the user's disk: its size, and the digest of
        the bytes that arrived (computed on ``host`` while they were unpacked), against the
        fingerprint."""
        preserved = vm.fact(PreserveResult)
        rec = preserved.disk(disk.source) if preserved else None
        if rec is None or not rec.checksum:
            return self.check_arrived(vm, ctx, host, disk)
        return self._digest_is_user_disk(ctx, host, backup_path(disk), rec, digest,
                                         ": the bytes that arrived have", "as it arrived")

    # -- backing files ------------------------------------------------------------------------

    def carry_backing(self, vm: VM, ctx: Context, disk: Disk) -> list[dict[str, Any]]:
        """Make sure each backing file of ``disk`` is on the target host, the same as on the
        source host (see :attr:`backing_files`), before the disk itself gets there; returns
        one record per backing file (``disk``, ``backing``, ``how``, ``checksum``,
        ``algorithm``)."""
        chain = self.backing_of(vm, ctx, disk)
        if not chain:
            return []
        if self.backing_files == "refuse":
            raise PreconditionError(f"{disk.source} has the backing file {chain[0]}, which the "
                                    f"{self.name} strategy cannot bring along; nothing was "
                                    "copied")
        return [self._bring_backing(vm, ctx, disk, backing) for backing in reversed(chain)]

    def _bring_backing(self, vm: VM, ctx: Context, disk: Disk, path: str) -> dict[str, Any]:
        src, tgt = source_host(vm), target_host(vm, ctx)
        source, there = ctx.shell(src), ctx.shell(tgt)
        algorithm = self.content_algorithm
        record = {"disk": disk.source, "backing": path, "algorithm": algorithm}
        with self._lock:
            lock = self._carrying.setdefault((tgt, path), threading.Lock())
        with lock:
            if source.run(["test", "-L", path], check=False).exit_code == 0:
                raise PreconditionError(f"the backing file {path} of {disk.source} is a "
                                        f"symbolic link on {src}: nothing was copied")
            size = source.stat(path).size
            key = (src, path, size)
            if key not in self._digests:
                self._digests[key] = content_digest(source, path, algorithm)
            want = self._digests[key]
            if self._checked.get((tgt, path)) == want:
                return {**record, "how": "already there", "checksum": want}
            # a copy that an earlier run started and did not check: ours to replace
            marker = path + ".rehost-partial"
            if there.exists(marker):
                there.remove(path)
                there.remove(marker)
            if there.exists(path):
                got = content_digest(there, path, algorithm)
                if got != want:
                    raise PreconditionError(
                        f"the backing file {path} of {disk.source} on {tgt} is not the one on "
                        f"{src} ({algorithm} {got}, not {want}): the disk would read other "
                        f"data there; nothing was copied")
                self._checked[(tgt, path)] = got
                return {**record, "how": "already there", "checksum": got}
            if self.backing_files != "copy":
                raise PreconditionError(f"the backing file {path} of {disk.source} is not on "
                                        f"{tgt}: the {self.name} strategy copies nothing; "
                                        "nothing was changed")
            refused = self.cannot_carry(path)
            if refused:
                raise PreconditionError(f"the backing file {path} of {disk.source}: {refused}")
            there.run(["mkdir", "-p", "--", posixpath.dirname(path)])
            there.write_text(marker, f"rehost: copying {path} from {src}; not checked yet\n")
            streamed = self.copy_file(source, path, ctx.host(tgt), algorithm)
            st = there.stat(path)
            if st.size != size:
                raise PreconditionError(f"the copy of the backing file {path} on {tgt} is "
                                        f"{st.size} bytes, not {size}")
            got = streamed if streamed else content_digest(there, path, algorithm)
            if got != want:
                raise PreconditionError(f"the copy of the backing file {path} on {tgt} has "
                                        f"{algorithm} {got}, the one on {src} has {want}")
            there.remove(marker)
            self._checked[(tgt, path)] = got
            return {**record, "how": "copied", "checksum": got, "bytes": st.allocated}

    def _watch(self, vm: VM, ctx: Context, host: str, path: str, total: int, measure: str,
               copy: Callable[..., None]) -> None:
        """Run ``copy`` in a thread; meanwhile tell observers how much has arrived."""
        failure: list[BaseException] = []

        def work() -> None:
            try:
                copy()
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=work, name=f"copy {vm.name}", daemon=True)
        t0 = time.monotonic()
        thread.start()
        sh = ctx.shell(host)
        while True:
            thread.join(self.progress_interval)
            if not thread.is_alive():
                break
            try:
                st = sh.stat(path)
                done = st.allocated if measure == "allocated" else st.size
            except RehostError:
                done = 0  # not created yet (or written under a temporary name)
            ctx.hooks.transfer_progress(vm, ctx, path, min(done, total), total,
                                        time.monotonic() - t0)
        if failure:
            raise failure[0]
        ctx.hooks.transfer_progress(vm, ctx, path, total, total, time.monotonic() - t0)

    def copy_result(self, copied: list[DiskCheck], started: float) -> TransferResult:
        seconds = max(time.monotonic() - started, 1e-6)
        total = sum(c.bytes for c in copied)
        return TransferResult(disks=copied, bytes=total, seconds=round(seconds, 3),
                              rate_mib_s=round(total / seconds / 2**20, 1), strategy=self.name)

    def check_arrived(self, vm: VM, ctx: Context, host: str, disk: Disk) -> DiskCheck:
        """The copy of ``X_BACK`` on ``host`` is the user's disk."""
        return self.matches_user_disk(vm, ctx, host, disk, backup_path(disk))

    def matches_user_disk(self, vm: VM, ctx: Context, host: str, disk: Disk,
                          path: str) -> DiskCheck:
        """``path`` on ``host`` has the size, and the checksum or sampled blocks, that the
        user's disk had when it was preserved; raises :class:`PreconditionError` otherwise."""
        preserved = vm.fact(PreserveResult)
        rec = preserved.disk(disk.source) if preserved else None
        if rec is None:
            raise PreconditionError(f"{disk.source} has no record from preserve_disks: "
                                    "nothing to compare it with")
        sh = ctx.shell(host)
        st = sh.stat(path)
        if st.size != rec.size:
            raise PreconditionError(f"{path} on {host} is {st.size} bytes, the user's disk "
                                    f"was {rec.size}")
        out = DiskCheck(path=path, size=st.size, allocated=st.allocated)
        if rec.checksum and rec.algorithm:
            got = content_digest(sh, path, rec.algorithm)
            if got != rec.checksum:
                raise PreconditionError(f"{path} on {host} has {rec.algorithm} {got}, the "
                                        f"user's disk had {rec.checksum}")
            out.checksum, out.algorithm = got, rec.algorithm
        if rec.sample and rec.sample.blocks:
            sample = rec.sample
            got_md5 = sh.sample_digests(path, sample.block, sample.blocks)
            differ = [n for n, a, b in zip(sample.blocks, got_md5, sample.md5, strict=True)
                      if a != b]
            if differ:
                raise PreconditionError(
                    f"{path} on {host} differs from the user's disk in {len(differ)} of "
                    f"{len(sample.blocks)} sampled {sample.block >> 20} MiB block(s) "
                    f"(first: block {differ[0]}): the user's disk had other bytes there")
            out.sample_blocks = len(sample.blocks)
        return out


def sample_blocks(size: int, block: int, samples: int) -> list[int]:
    """Which blocks of a ``size``-byte file to sample: the first, the last and the rest evenly
    spaced between (every block of a small file)."""
    count = -(-size // block)
    if count <= 0 or samples <= 0:
        return []
    if count <= samples:
        return list(range(count))
    if samples == 1:
        return [0]
    return sorted({round(i * (count - 1) / (samples - 1)) for i in range(samples)})


VIRTUAL_SIZE = re.compile(r"virtual size:.*\((\d+) bytes\)")


def virtual_size(sh: Shell, path: str, disk: Disk, file_size: int) -> int | None:
    """The size the guest sees: the file's size for raw, ``qemu-img info`` for an image
    format (its text output, which every qemu-img since CentOS 5's prints)."""
    if disk.format in (None, "raw"):
        return file_size
    out = sh.run(["qemu-img", "info", "-f", disk.format, path], check=False).stdout
    found = VIRTUAL_SIZE.search(out)
    return int(found.group(1)) if found else None
