# fiberio's gdb commands: list a process's greenlets and show a parked greenlet's stack, in a live
# process or a core file.
#
#   (gdb) source /usr/local/share/fiberio/gdb/fiberio-gdb.py
#   (gdb) info greenlets          # every thread's live greenlets: id, name, state, what it waits on...
#   (gdb) greenlet bt 3           # the stack of greenlet 3, as it was when it parked
#
# Where the data comes from (fiberio/greenlet.cpp, park.hpp): each thread's registry of live greenlets
# is anchored at the thread_local fiberio::detail::t_greenlets; each GreenletBase has id_, name_,
# status_, spawn_site_, spawner_ and ctx_ (its boost::fibers::context), whose properties_ is fiberio's
# FiberState (parked: the Waiter it is parked on, with `what` it waits on and the object). A suspended
# fiber's context holds c_.fctx_, the stack pointer Boost.Context's jump_fcontext (x86-64 SysV, the
# assembly backend) saved its callee-saved registers at:
#   +0x00 fpu control words, +0x08 (unused), +0x10 r12, +0x18 r13, +0x20 r14, +0x28 r15,
#   +0x30 rbx, +0x38 rbp, +0x40 return address; the fiber's rsp after that return is fctx + 0x48.
# `greenlet bt` hands those to gdb through a frame unwinder (_IntoGreenlet): the greenlet's thread's
# innermost frame unwinds into them, and gdb's own unwinder (DWARF CFI) walks the greenlet's stack from
# there, exactly, the same in a live process and in a core file; nothing is written to the process.
# Builds using the ucontext backend (the sanitizer builds) have another layout: the commands say so
# instead of guessing.
import re

import gdb
import gdb.unwinder

_STATUS = {0: "pending", 1: "running", 2: "succeeded", 3: "failed", 4: "killed"}
_FRAME = [("r12", 0x10), ("r13", 0x18), ("r14", 0x20), ("r15", 0x28), ("rbx", 0x30), ("rbp", 0x38)]
_RIP_AT, _RSP_AFTER = 0x40, 0x48


class FiberioGdbError(gdb.GdbError):
    pass


def _u64(addr):
    return int(gdb.Value(addr).cast(gdb.lookup_type("unsigned long").pointer()).dereference())


def _std_string(v):
    """A libstdc++ std::string's text (read directly: the pretty printers may not be loaded)."""
    p = v["_M_dataplus"]["_M_p"]
    n = int(v["_M_string_length"])
    return p.string(length=min(n, 200))


def _unique_ptr_get(up, pointee):
    # A std::unique_ptr with the default deleter is one pointer, at offset 0.
    return up.address.cast(pointee.pointer().pointer()).dereference()


def _field(ptr, name):
    """ptr->name, read at the field's offset: dereferencing a boost::fibers::context* would have gdb
    look for the dynamic type's RTTI (a warning per greenlet: the worker_context types have none)."""
    for f in ptr.type.target().strip_typedefs().fields():
        if f.name == name:
            addr = int(ptr.cast(gdb.lookup_type("unsigned long"))) + f.bitpos // 8
            return gdb.Value(addr).cast(f.type.pointer()).dereference()
    raise gdb.error("There is no member named %s." % name)


_anchor_missing = False


def _thread_registry():
    """The selected thread's ThreadGreenlets*, or None if the thread has no fiberio greenlets."""
    global _anchor_missing
    try:
        reg = gdb.parse_and_eval("'fiberio::detail::t_greenlets'")  # quoted: the frame may be C (libc)
    except gdb.error:
        # No fiberio in this program, no debug info for it, or its TLS is not readable here.
        _anchor_missing = True
        return None
    return reg if int(reg) != 0 else None


def _live(reg):
    v = reg.dereference()["live_"]["_M_impl"]
    start, finish = v["_M_start"], v["_M_finish"]
    return [(start + i).dereference() for i in range(int(finish - start))]


def _fctx(g):
    """The greenlet's saved fcontext (an int; 0 while it runs or before it started), or raises if
    this build does not use the assembly fcontext backend."""
    ctx = g["ctx_"]
    if int(ctx) == 0:
        return 0
    c = _field(ctx, "c_")
    try:
        return int(c["fctx_"])
    except gdb.error:
        raise FiberioGdbError(
            "fiberio-gdb: this build's Boost.Context does not use the assembly fcontext backend "
            "(a sanitizer build uses ucontext): saved registers cannot be read")


def _symbolize(pc):
    """The function a code address lies in: the outermost one if pc is in inlined code (spawn() is
    always inlined into its caller), with file:line when pc is in that function's own code. (gdb's
    Python API does not give an inlined call's call site; the run-info dump, runinfo.hpp, does.)"""
    if pc == 0:
        return "?"
    try:
        block = gdb.block_for_pc(pc)
    except RuntimeError:
        block = None
    fn, inlined = None, False
    while block is not None and not block.is_static and not block.is_global:
        if block.function is not None:
            if fn is not None:
                inlined = True
            fn = block.function
        block = block.superblock
    if fn is None:
        text = gdb.execute("info symbol 0x%x" % pc, to_string=True).strip()
        return text.split(" in section")[0] if not text.startswith("No symbol") else "0x%x" % pc
    sal = gdb.find_pc_line(pc)
    if inlined or sal.symtab is None:
        return fn.print_name
    return "%s (%s:%d)" % (fn.print_name, sal.symtab.filename.rsplit("/", 1)[-1], sal.line)


def _describe_object(what, obj):
    """' fd N' / ' greenlet N' / ' 0x...' for the object a parked greenlet waits on (park.hpp's WaitOn:
    for read and write it is the FdState, for join the GreenletBase)."""
    try:
        if what in ("read", "write"):
            fd = gdb.Value(obj).cast(gdb.lookup_type("fiberio::detail::FdState").pointer()).dereference()["fd"]
            return " fd %d" % int(fd)
        if what == "join":
            g = gdb.Value(obj).cast(gdb.lookup_type("fiberio::GreenletBase").pointer()).dereference()
            return " greenlet %d" % int(g["id_"])
    except gdb.error:
        pass
    return " 0x%x" % obj


class Greenlet:
    def __init__(self, thread, g):
        self.thread = thread
        self.g = g
        self.id = int(g["id_"])
        self.status = _STATUS.get(int(g["status_"]), str(g["status_"]))
        name = _unique_ptr_get(g["name_"], gdb.lookup_type("std::string"))
        self.name = _std_string(name.dereference()) if int(name) != 0 else "Greenlet-%d" % self.id
        self.spawner = int(g["spawner_"])
        self.spawn_site = int(g["spawn_site_"].cast(gdb.lookup_type("unsigned long")))
        self.ctx = g["ctx_"]
        self.waits_on = None
        if int(self.ctx) != 0:
            props = _field(self.ctx, "properties_")
            if int(props) != 0:
                fs = props.cast(gdb.lookup_type("fiberio::detail::FiberState").pointer()).dereference()
                w = fs["parked"]
                if int(w) != 0:
                    what = w.dereference()["what"]
                    obj = int(w.dereference()["object"].cast(gdb.lookup_type("unsigned long")))
                    self.waits_on = what.string() if int(what) else "wait"
                    if obj:
                        self.waits_on += _describe_object(self.waits_on, obj)

    def state(self, fctx):
        if self.status == "running":
            if self.waits_on:
                return "parked"
            if fctx == 0:
                return "running"
            return "ready" if fctx else "running or ready"  # ready: suspended, not parked (yield)
        return self.status


def _all_greenlets():
    """[(InferiorThread, [Greenlet...])] for every thread with a registry. Leaves the originally
    selected thread and frame selected."""
    inferior = gdb.selected_inferior()
    old_thread = gdb.selected_thread()
    old_frame = gdb.selected_frame() if old_thread is not None else None
    found = []
    try:
        for t in sorted(inferior.threads(), key=lambda t: t.num):
            t.switch()
            reg = _thread_registry()
            if reg is None:
                continue
            found.append((t, [Greenlet(t, g) for g in _live(reg)]))
    finally:
        if old_thread is not None:
            old_thread.switch()
            old_frame.select()
    return found


class InfoGreenlets(gdb.Command):
    """List the fiberio greenlets of every thread: id, name, state, what a parked one waits on, the
    greenlet that spawned it, where it was spawned.
    Usage: info greenlets"""

    def __init__(self):
        super().__init__("info greenlets", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        global _anchor_missing
        _anchor_missing = False
        threads = _all_greenlets()
        if not threads:
            print("No fiberio greenlets found: " + (
                "gdb cannot read fiberio::detail::t_greenlets (fiberio built without debug info? build "
                "it with -g, e.g. RelWithDebInfo)" if _anchor_missing else "no thread has any"))
            return
        for t, greenlets in threads:
            print("Thread %d (LWP %d): %d greenlet(s)" % (t.num, t.ptid[1], len(greenlets)))
            for g in greenlets:
                try:
                    fctx = _fctx(g.g)
                except FiberioGdbError:
                    fctx = None  # another backend (ucontext): whether it is suspended is unknown
                line = "  Greenlet %d \"%s\" %s" % (g.id, g.name, g.state(fctx))
                if g.waits_on:
                    line += " on %s" % g.waits_on
                line += ", spawned by %s in %s" % (
                    "greenlet %d" % g.spawner if g.spawner else "the main fiber", _symbolize(g.spawn_site))
                print(line)


class GreenletPrefix(gdb.Command):
    """fiberio greenlet commands. greenlet bt ID: the stack of a suspended greenlet."""

    def __init__(self):
        super().__init__("greenlet", gdb.COMMAND_STACK, prefix=True)


def _saved_registers(fctx):
    regs = {name: _u64(fctx + off) for name, off in _FRAME}
    regs["rip"] = _u64(fctx + _RIP_AT)
    regs["rsp"] = fctx + _RSP_AFTER
    return regs


class _FrameId:
    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


class _IntoGreenlet(gdb.unwinder.Unwinder):
    """While `greenlet bt` runs: the selected thread's innermost real (not inlined) frame unwinds into
    the greenlet's saved registers, so the frames after it are the greenlet's stack, walked by gdb's own
    DWARF unwinder. Nothing is written to the process (a core file cannot be written), and its threads
    keep their registers."""

    def __init__(self):
        super().__init__("fiberio-greenlet-bt")
        self.regs = None  # the greenlet's registers, only while `greenlet bt` runs
        self.level = 0  # the level of the thread's innermost real frame (inlined ones come first)

    def __call__(self, pending):
        if self.regs is None or pending.level() != self.level:
            return None
        # gdb stops a backtrace whose caller's frame lies inner to (below) its callee's: the greenlet's
        # stack may lie anywhere relative to the thread's. Frame #0 is given an id just below the
        # greenlet's stack pointer instead of its own (ids only tell frames apart).
        info = pending.create_unwind_info(_FrameId(gdb.Value(self.regs["rsp"] - 64), pending.read_register("rip")))
        for name, value in self.regs.items():
            info.add_saved_register(name, gdb.Value(value).cast(pending.read_register(name).type))
        return info


_UNWINDER = _IntoGreenlet()
gdb.unwinder.register_unwinder(None, _UNWINDER, replace=True)


def _bt_of(regs, bt_args):
    """gdb's bt of the greenlet whose saved registers are regs, run on the selected thread: its output
    without the thread's own innermost frames, renumbered from #0."""
    gdb.invalidate_cached_frames()
    f, inlined = gdb.newest_frame(), 0
    while f is not None and f.type() == gdb.INLINE_FRAME:
        f, inlined = f.older(), inlined + 1
    own = inlined + 1  # the thread's frames shown before the greenlet's
    # A frame count counts the thread's own frames too.
    args = [str(int(a) + own) if a.isdigit() else a for a in gdb.string_to_argv(bt_args)]
    _UNWINDER.level = inlined
    _UNWINDER.regs = regs
    gdb.invalidate_cached_frames()
    try:
        text = gdb.execute("bt " + " ".join(args), to_string=True)
    finally:
        _UNWINDER.regs = None
        gdb.invalidate_cached_frames()
    out, frame = [], -1
    for line in text.splitlines():
        m = re.match(r"#(\d+)(\s+)", line)
        if m:
            frame = int(m.group(1))
            if frame >= own:
                line = "#" + str(frame - own).ljust(len(m.group(1)) + len(m.group(2)) - 1) + " " + line[m.end():]
        if frame >= own:  # the thread's own frames, and their lines under bt full, are left out
            out.append(line)
    print("\n".join(out))


class GreenletBt(gdb.Command):
    """Print the stack of a suspended greenlet (parked, or ready to run), as it was when it switched
    out. Extra arguments go to bt (full, a frame count...).
    Usage: greenlet bt ID [bt options]"""

    def __init__(self):
        super().__init__("greenlet bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if not args or not args[0].isdigit():
            raise gdb.GdbError("usage: greenlet bt ID [bt options]")
        want = int(args[0])
        bt_args = " ".join(args[1:])
        if gdb.lookup_type("unsigned long").sizeof != 8 or "x86-64" not in gdb.selected_inferior().architecture().name():
            raise gdb.GdbError("fiberio-gdb: greenlet bt supports x86-64 only")
        for t, greenlets in _all_greenlets():
            for g in greenlets:
                if g.id != want:
                    continue
                fctx = _fctx(g.g)
                if fctx == 0:
                    raise gdb.GdbError(
                        "greenlet %d is %s: no saved context%s" % (
                            want, g.state(fctx),
                            " (it is the one running on thread %d: use `thread %d` and `bt`)" % (t.num, t.num)
                            if g.state(fctx) == "running" else ""))
                old_thread = gdb.selected_thread()
                t.switch()
                try:
                    print("Greenlet %d \"%s\" (thread %d), suspended at fctx 0x%x:" % (g.id, g.name, t.num, fctx))
                    _bt_of(_saved_registers(fctx), bt_args)
                finally:
                    old_thread.switch()
                return
        raise gdb.GdbError("no live greenlet with id %d (see `info greenlets`)" % want)


InfoGreenlets()
GreenletPrefix()
GreenletBt()
