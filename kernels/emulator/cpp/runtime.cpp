// The execution model: a grid runs on the launching thread, block after block; the threads of
// a block are fibers (each with its own stack) switched cooperatively at the only points where
// CUDA threads can wait for each other: __syncthreads, warp operations and exit.
//
// - __syncthreads releases the block only when every thread has arrived, at the same call site;
//   a barrier that some threads never reach (they exited, or wait at another one) is reported,
//   as is any deadlock.
// - A warp operation waits until every lane of its mask has arrived with the same operation and
//   mask, then each lane reads its source lane's value. Lanes that do not exist (a block that is
//   not a multiple of 32), lanes outside the mask and mismatched operations are reported.
// - Between those points a thread runs alone, and the next thread to run is always the lowest
//   (or highest) runnable one: a warp gets as far ahead of the rest as synchronisation allows,
//   so a missing barrier reads data not yet written (or already overwritten).
// - Device buffers end at an inaccessible page: an access past the end faults, and the launch
//   fails with CUDA_ERROR_ILLEGAL_ADDRESS and a message naming the thread and the buffer. The
//   kernels are compiled with trapping bounds checks on fixed-size arrays (shared tiles) and
//   signed overflow checks; a trap fails the launch too.
// - A block larger than the kernel's __launch_bounds__ is refused, as a GPU refuses it.
// Failures end the launch at once (the block's other fibers are abandoned) with the first
// message, which the driver prints and keeps for bge_emu_last_error.
#include "runtime.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace bge_emu {

thread_local uint3 thread_idx;
thread_local uint3 block_idx;
thread_local dim3 block_dim;
thread_local dim3 grid_dim;

uint64_t fnv1a(const char* text, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; ++i) {
        h ^= (unsigned char)text[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

namespace {

// ---- fibers ----------------------------------------------------------------------------------
// A saved stack pointer; everything else a switch must keep is pushed on the stack it leaves.
// x86-64 switches in a few instructions (ucontext's swapcontext makes a system call per switch,
// which made the elementwise kernels' millions of one-switch threads slow); other
// architectures use ucontext.
#if defined(__x86_64__)
struct Context {
    void* sp;
};
extern "C" void bge_emu_switch_context(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .type bge_emu_switch_context,@function
bge_emu_switch_context:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size bge_emu_switch_context, .-bge_emu_switch_context
)");

void switch_context(Context* from, Context* to) { bge_emu_switch_context(&from->sp, to->sp); }

// A fresh stack that "returns" into entry(), which must never return.
void init_context(Context* c, char* stack, size_t size, void (*entry)()) {
    uintptr_t* sp = (uintptr_t*)(((uintptr_t)(stack + size)) & ~(uintptr_t)15);
    *--sp = 0;                    // entry's (unused) return address: keeps the ABI alignment
    *--sp = (uintptr_t)entry;     // popped by ret
    for (int i = 0; i < 6; ++i) *--sp = 0;  // rbp rbx r12 r13 r14 r15
    uint32_t control[2];
    asm volatile("stmxcsr %0" : "=m"(control[0]));
    asm volatile("fnstcw %0" : "=m"(control[1]));
    --sp;
    std::memcpy(sp, control, 8);
    c->sp = sp;
}
#else
struct Context {
    ucontext_t uc;
};
void switch_context(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }
void init_context(Context* c, char* stack, size_t size, void (*entry)()) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = nullptr;
    makecontext(&c->uc, entry, 0);
}
#endif

constexpr size_t STACK_BYTES = 128 * 1024;
constexpr size_t PAGE = 4096;

enum State : uint8_t { RUNNABLE, AT_BARRIER, AT_WARP_OP, EXITED };

struct Fiber {
    Context context;
    char* stack = nullptr;  // STACK_BYTES, with an inaccessible page below it
    uint3 idx;
    unsigned linear;
    State state;
    const char* barrier_file;
    int barrier_line;
    unsigned long long warp_result;
};

// A warp operation some lanes of a warp have reached.
struct PendingWarpOp {
    unsigned arrived = 0;
    unsigned mask = 0;
    WarpOp op = SHFL_XOR;
    int width = 32;
    unsigned long long value[32];
    int arg[32];
};

struct Block {
    const Kernel* kernel;
    void** params;
    Schedule schedule;
    unsigned threads;
    Fiber* fibers;  // [threads]
    std::vector<uint64_t> runnable;  // bit per thread
    std::vector<PendingWarpOp> warps;
    unsigned at_barrier = 0;
    unsigned exited = 0;
    Fiber* current = nullptr;
    Context launcher;  // the launching thread, resumed when the block ends or fails
    bool in_kernel = false;
    int error_code = 0;
    std::string error;
};

// Fiber stacks, kept per OS thread and reused by every block it runs.
struct StackPool {
    std::vector<char*> stacks;
    ~StackPool() {
        for (char* s : stacks) munmap(s - PAGE, STACK_BYTES + PAGE);
    }
    bool reserve(size_t n) {
        while (stacks.size() < n) {
            char* m = (char*)mmap(nullptr, STACK_BYTES + PAGE, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
            if (m == MAP_FAILED) return false;
            mprotect(m, PAGE, PROT_NONE);  // a fiber that overflows its stack faults
            stacks.push_back(m + PAGE);
        }
        return true;
    }
};

thread_local StackPool t_stacks;
thread_local Block* t_block = nullptr;

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

std::string where(const Block& b, const Fiber* f) {
    std::string s = format("%s, block (%u,%u,%u)", b.kernel->name, block_idx.x, block_idx.y,
                           block_idx.z);
    if (f) s += format(" thread (%u,%u,%u)", f->idx.x, f->idx.y, f->idx.z);
    return s;
}

// Ends the launch: back to the launcher, abandoning every fiber of the block.
[[noreturn]] void abort_block(Block& b, int code, const std::string& message) {
    if (b.error_code == 0) {
        b.error_code = code;
        b.error = message;
    }
    Context abandoned;
    b.in_kernel = false;
    switch_context(&abandoned, &b.launcher);
    __builtin_unreachable();
}

void set_runnable(Block& b, Fiber& f) {
    f.state = RUNNABLE;
    b.runnable[f.linear >> 6] |= 1ull << (f.linear & 63);
}

void set_waiting(Block& b, Fiber& f, State s) {
    f.state = s;
    b.runnable[f.linear >> 6] &= ~(1ull << (f.linear & 63));
}

Fiber* next_runnable(Block& b) {
    const size_t words = b.runnable.size();
    if (b.schedule == ASCENDING) {
        for (size_t w = 0; w < words; ++w)
            if (b.runnable[w]) return &b.fibers[w * 64 + __builtin_ctzll(b.runnable[w])];
    } else {
        for (size_t w = words; w-- > 0;)
            if (b.runnable[w]) return &b.fibers[w * 64 + 63 - __builtin_clzll(b.runnable[w])];
    }
    return nullptr;
}

std::string describe_deadlock(const Block& b) {
    unsigned barrier = 0, warp = 0;
    const Fiber* example = nullptr;
    for (unsigned i = 0; i < b.threads; ++i) {
        if (b.fibers[i].state == AT_BARRIER) {
            ++barrier;
            if (!example) example = &b.fibers[i];
        }
        if (b.fibers[i].state == AT_WARP_OP) ++warp;
    }
    std::string s = format("%s: deadlock: %u of %u threads wait at __syncthreads", where(b, nullptr).c_str(),
                           barrier, b.threads);
    if (example) s += format(" (%s:%d)", example->barrier_file, example->barrier_line);
    s += format(", %u at a warp operation, %u have exited", warp, b.exited);
    if (barrier && b.exited) s += " (a barrier that not every thread of the block reaches)";
    return s;
}

// The running fiber gives way to the next runnable one (possibly itself).
void yield(Block& b, Fiber* self) {
    Fiber* next = next_runnable(b);
    if (!next) {
        if (b.exited == b.threads) {
            b.in_kernel = false;
            switch_context(&self->context, &b.launcher);
            __builtin_unreachable();  // an exited fiber is never resumed
        }
        abort_block(b, 719 /* CUDA_ERROR_LAUNCH_FAILED */, describe_deadlock(b));
    }
    if (next == self) return;
    b.current = next;
    thread_idx = next->idx;
    switch_context(&self->context, &next->context);
}

void fiber_main() {
    Block& b = *t_block;
    b.kernel->thunk(b.params);
    Fiber* self = b.current;
    set_waiting(b, *self, EXITED);
    ++b.exited;
    yield(b, self);
    __builtin_unreachable();
}

int run_block(Block& b) {
    for (unsigned i = 0; i < b.threads; ++i) {
        Fiber& f = b.fibers[i];
        f.linear = i;
        f.idx = {i % block_dim.x, (i / block_dim.x) % block_dim.y, i / (block_dim.x * block_dim.y)};
        init_context(&f.context, f.stack, STACK_BYTES, fiber_main);
        set_runnable(b, f);
    }
    b.at_barrier = 0;
    b.exited = 0;
    for (auto& w : b.warps) w.arrived = 0;
    Fiber* first = next_runnable(b);
    b.current = first;
    thread_idx = first->idx;
    b.in_kernel = true;
    switch_context(&b.launcher, &first->context);
    b.in_kernel = false;
    return b.error_code;
}

// ---- device memory ---------------------------------------------------------------------------
struct Buffer {
    char* map;
    size_t map_bytes;
    size_t bytes;
};
std::mutex g_memory_mutex;
std::map<uintptr_t, Buffer> g_buffers;  // by start address

std::string describe_address(uintptr_t addr) {
    std::lock_guard<std::mutex> lock(g_memory_mutex);
    for (auto& [start, buf] : g_buffers) {
        const uintptr_t map = (uintptr_t)buf.map;
        if (addr >= map && addr < map + buf.map_bytes) {
            if (addr >= start + buf.bytes)
                return format("%zu bytes past the end of a %zu-byte device buffer",
                              (size_t)(addr - start - buf.bytes), buf.bytes);
            return format("%zu bytes before the start of a %zu-byte device buffer",
                          (size_t)(start - addr), buf.bytes);
        }
    }
    return "not in any live device buffer";
}

// ---- faults ----------------------------------------------------------------------------------
struct sigaction g_previous[4];
const int FAULTS[4] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE};

void on_fault(int sig, siginfo_t* info, void*) {
    Block* b = t_block;
    if (b && b->in_kernel) {
        // A kernel thread did what a GPU would stop it for: fail the launch.
        sigset_t unblock;
        sigemptyset(&unblock);
        sigaddset(&unblock, sig);
        pthread_sigmask(SIG_UNBLOCK, &unblock, nullptr);
        const uintptr_t addr = (uintptr_t)info->si_addr;
        std::string what;
        if (sig == SIGILL)
            what = "an index outside a fixed-size array (a __shared__ tile or a local array) or a "
                   "signed integer overflow (the kernels are built with -fsanitize=bounds,"
                   "signed-integer-overflow trapping)";
        else if (sig == SIGFPE)
            what = "an integer division by zero";
        else
            what = format("illegal memory access at %#lx: %s", (unsigned long)addr, describe_address(addr).c_str());
        abort_block(*b, sig == SIGSEGV || sig == SIGBUS ? 700 /* CUDA_ERROR_ILLEGAL_ADDRESS */
                                                         : 715 /* CUDA_ERROR_ILLEGAL_INSTRUCTION */,
                    format("%s: %s", where(*b, b->current).c_str(), what.c_str()));
    }
    // Not a kernel's fault: hand it to whoever handled it before (it faults again on return).
    for (int i = 0; i < 4; ++i)
        if (FAULTS[i] == sig) sigaction(sig, &g_previous[i], nullptr);
}

void install_fault_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        for (int i = 0; i < 4; ++i) sigaction(FAULTS[i], &sa, &g_previous[i]);
    });
}

}  // namespace

// ---- the kernel-side entry points (host_emulation.h) -----------------------------------------

void syncthreads(const char* file, int line) {
    Block& b = *t_block;
    Fiber* self = b.current;
    self->barrier_file = file;
    self->barrier_line = line;
    set_waiting(b, *self, AT_BARRIER);
    if (++b.at_barrier == b.threads) {
        for (unsigned i = 0; i < b.threads; ++i) {
            const Fiber& f = b.fibers[i];
            if (f.barrier_line != line || std::strcmp(f.barrier_file, file) != 0)
                abort_block(b, 719,
                            format("%s: threads meet at different __syncthreads: thread %u at "
                                   "%s:%d, thread %u at %s:%d",
                                   where(b, nullptr).c_str(), f.linear, f.barrier_file,
                                   f.barrier_line, self->linear, file, line));
        }
        for (unsigned i = 0; i < b.threads; ++i) set_runnable(b, b.fibers[i]);
        b.at_barrier = 0;
    }
    yield(b, self);
}

unsigned long long warp_op(WarpOp op, unsigned mask, unsigned long long value, int arg, int width) {
    Block& b = *t_block;
    Fiber* self = b.current;
    const unsigned lane = self->linear & 31, warp = self->linear >> 5;
    const unsigned lanes = std::min(32u, b.threads - warp * 32);
    const unsigned present = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    const char* name[] = {"__shfl_xor_sync", "__shfl_down_sync", "__shfl_up_sync", "__shfl_sync",
                          "__syncwarp"};
    if (!(mask >> lane & 1))
        fail(format("%s with mask %#010x called by lane %u, which the mask leaves out", name[op],
                    mask, lane).c_str());
    if (mask & ~present)
        fail(format("%s with mask %#010x names lanes that do not exist: warp %u of a %u-thread "
                    "block has %u lanes", name[op], mask, warp, b.threads, lanes).c_str());
    if (width < 1 || width > 32 || (width & (width - 1)))
        fail(format("%s with width %d (a power of two up to 32 is required)", name[op], width).c_str());
    PendingWarpOp& p = b.warps[warp];
    if (p.arrived == 0) {
        p.mask = mask;
        p.op = op;
        p.width = width;
    } else if (p.mask != mask || p.op != op || p.width != width) {
        fail(format("lanes of warp %u meet at different warp operations: %s mask %#010x width %d "
                    "and %s mask %#010x width %d", warp, name[p.op], p.mask, p.width, name[op], mask,
                    width).c_str());
    }
    p.value[lane] = value;
    p.arg[lane] = arg;
    p.arrived |= 1u << lane;
    set_waiting(b, *self, AT_WARP_OP);
    if (p.arrived == p.mask) {
        for (unsigned l = 0; l < 32; ++l) {
            if (!(p.mask >> l & 1)) continue;
            const int first = (int)(l & ~(unsigned)(p.width - 1)), a = p.arg[l];
            int src = (int)l;
            switch (p.op) {
                case SHFL_XOR: src = (int)l ^ a; if (src >= first + p.width) src = (int)l; break;
                case SHFL_DOWN: src = (int)l + a; if (src >= first + p.width) src = (int)l; break;
                case SHFL_UP: src = (int)l - a; if (src < first) src = (int)l; break;
                case SHFL_IDX: src = first + (a & (p.width - 1)); break;
                case SYNC_WARP: break;
            }
            if (src < 0 || src > 31 || !(p.mask >> src & 1))
                fail(format("%s: lane %u reads lane %d, which is not in the mask %#010x", name[p.op],
                            l, src, p.mask).c_str());
            Fiber& f = b.fibers[warp * 32 + l];
            f.warp_result = p.op == SYNC_WARP ? 0 : p.value[src];
            set_runnable(b, f);
        }
        p.arrived = 0;
    }
    yield(b, self);
    return self->warp_result;
}

void fail(const char* message) {
    Block* b = t_block;
    if (!b || !b->in_kernel) {
        std::fprintf(stderr, "pg_bge CUDA emulator: %s (outside a kernel)\n", message);
        std::abort();
    }
    abort_block(*b, 719 /* CUDA_ERROR_LAUNCH_FAILED */,
                format("%s: %s", where(*b, b->current).c_str(), message));
}

// ---- launches and memory ---------------------------------------------------------------------

int launch(const Kernel& kernel, dim3 grid, dim3 block, unsigned dynamic_shared_bytes,
           void** params, Schedule schedule, std::string* error) {
    const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    // The limits every GPU since sm_70 enforces (CUDA_ERROR_INVALID_VALUE there too).
    if (!grid.x || !grid.y || !grid.z || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        *error = format("%s: grid (%u,%u,%u) is out of range", kernel.name, grid.x, grid.y, grid.z);
        return 1;
    }
    if (!threads || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
        *error = format("%s: block (%u,%u,%u) is out of range", kernel.name, block.x, block.y, block.z);
        return 1;
    }
    if (kernel.max_threads && threads > kernel.max_threads) {
        *error = format("%s: a block of %llu threads exceeds its __launch_bounds__(%u)", kernel.name,
                        threads, kernel.max_threads);
        return 1;
    }
    if (dynamic_shared_bytes) {
        *error = format("%s: dynamic shared memory (%u bytes) is not emulated", kernel.name,
                        dynamic_shared_bytes);
        return 1;
    }
    install_fault_handler();
    if (!t_stacks.reserve(threads)) {
        *error = format("%s: cannot map %llu fiber stacks", kernel.name, threads);
        return 2;
    }
    std::unique_ptr<Fiber[]> fibers(new Fiber[threads]);
    for (unsigned i = 0; i < threads; ++i) fibers[i].stack = t_stacks.stacks[i];

    Block b;
    b.kernel = &kernel;
    b.params = params;
    b.schedule = schedule;
    b.threads = (unsigned)threads;
    b.fibers = fibers.get();
    b.runnable.assign((threads + 63) / 64, 0);
    b.warps.resize((threads + 31) / 32);

    Block* outer = t_block;
    t_block = &b;
    block_dim = block;
    grid_dim = grid;
    int rc = 0;
    for (unsigned z = 0; z < grid.z && !rc; ++z)
        for (unsigned y = 0; y < grid.y && !rc; ++y)
            for (unsigned x = 0; x < grid.x && !rc; ++x) {
                block_idx = {x, y, z};
                rc = run_block(b);
            }
    t_block = outer;
    if (rc) *error = b.error;
    return rc;
}

void* device_alloc(size_t bytes) {
    if (!bytes) return nullptr;
    const size_t data = (bytes + PAGE - 1) / PAGE * PAGE;
    const size_t map_bytes = PAGE + data + PAGE;
    char* map = (char*)mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) return nullptr;
    mprotect(map, PAGE, PROT_NONE);
    mprotect(map + PAGE + data, PAGE, PROT_NONE);
    // The buffer ends exactly at the guard page; its start is aligned to the largest power of
    // two (up to 256, cudaMalloc's alignment) that divides its size.
    char* ptr = map + PAGE + data - bytes;
    // Uninitialised device memory: all bits set, which is NaN in f32, f16 and bf16.
    std::memset(ptr, 0xff, bytes);
    std::lock_guard<std::mutex> lock(g_memory_mutex);
    g_buffers[(uintptr_t)ptr] = Buffer{map, map_bytes, bytes};
    return ptr;
}

bool device_free(void* ptr) {
    std::lock_guard<std::mutex> lock(g_memory_mutex);
    auto it = g_buffers.find((uintptr_t)ptr);
    if (it == g_buffers.end()) return false;
    munmap(it->second.map, it->second.map_bytes);
    g_buffers.erase(it);
    return true;
}

bool device_range(const void* ptr, size_t bytes) {
    std::lock_guard<std::mutex> lock(g_memory_mutex);
    auto it = g_buffers.upper_bound((uintptr_t)ptr);
    if (it == g_buffers.begin()) return false;
    --it;
    const uintptr_t p = (uintptr_t)ptr;
    return p >= it->first && p + bytes <= it->first + it->second.bytes;
}

// ---- PTX conversions -------------------------------------------------------------------------

namespace {

enum Rounding { NONE, RN, RZ, RM, RP };
enum Type { F32, F16, BF16, BAD };

struct Cvt {
    Rounding rounding = NONE;
    Type dst = BAD, src = BAD;
};

Type type_of(const std::string& t) {
    return t == "f32" ? F32 : t == "f16" ? F16 : t == "bf16" ? BF16 : BAD;
}

// "cvt[.rnd].dtype.atype %0, %1;" with the asm constraints that must go with those types.
Cvt parse_cvt(const char* instruction, const char* out_constraint, const char* in_constraint) {
    std::string text(instruction);
    const std::string operands = " %0, %1;";
    if (text.size() <= operands.size() || text.compare(text.size() - operands.size(), operands.size(), operands) != 0)
        fail(format("PTX \"%s\": expected \"cvt... %%0, %%1;\"", instruction).c_str());
    std::vector<std::string> parts;
    std::string op = text.substr(0, text.size() - operands.size());
    for (size_t start = 0;;) {
        size_t dot = op.find('.', start);
        parts.push_back(op.substr(start, dot - start));
        if (dot == std::string::npos) break;
        start = dot + 1;
    }
    Cvt c;
    if (parts[0] != "cvt" || parts.size() < 3)
        fail(format("PTX \"%s\" is not emulated (only cvt between f32 and f16/bf16)", instruction).c_str());
    for (size_t i = 1; i + 2 < parts.size(); ++i) {
        const std::string& r = parts[i];
        const Rounding mode = r == "rn" ? RN : r == "rz" ? RZ : r == "rm" ? RM : r == "rp" ? RP : NONE;
        if (mode == NONE || c.rounding != NONE)
            fail(format("PTX \"%s\": modifier .%s is not emulated", instruction, r.c_str()).c_str());
        c.rounding = mode;
    }
    c.dst = type_of(parts[parts.size() - 2]);
    c.src = type_of(parts[parts.size() - 1]);
    const bool narrowing = c.dst != F32 && c.src == F32, widening = c.dst == F32 && c.src != F32;
    if (!narrowing && !widening)
        fail(format("PTX \"%s\" is not emulated (only cvt between f32 and f16/bf16)", instruction).c_str());
    if (narrowing && c.rounding == NONE)
        fail(format("PTX \"%s\": a narrowing cvt needs a rounding modifier", instruction).c_str());
    if (widening && c.rounding != NONE)
        fail(format("PTX \"%s\": a widening cvt takes no rounding modifier", instruction).c_str());
    const char* want_out = c.dst == F32 ? "=f" : "=h";
    const char* want_in = c.src == F32 ? "f" : "h";
    if (std::strcmp(out_constraint, want_out) || std::strcmp(in_constraint, want_in))
        fail(format("PTX \"%s\" with constraints \"%s\", \"%s\" (expected \"%s\", \"%s\")", instruction,
                    out_constraint, in_constraint, want_out, want_in).c_str());
    return c;
}

// The parse of the instruction text last seen at each call site (its string literal).
const Cvt& cached_cvt(const char* instruction, const char* oc, const char* ic) {
    thread_local std::map<const char*, Cvt> cache;
    auto it = cache.find(instruction);
    if (it == cache.end()) it = cache.emplace(instruction, parse_cvt(instruction, oc, ic)).first;
    return it->second;
}

// f32 -> a binary format with `mantissa` stored bits whose subnormal step is 2^min_exp, with
// the given rounding. Exact integer arithmetic: |x| = m * 2^e, rounded to a multiple of the
// target's step at that magnitude. NaN gives the canonical NaN (all mantissa bits set), as NVIDIA
// GPUs do; the tests only require a NaN.
uint16_t narrow(float x, Rounding rounding, int mantissa, int min_exp, uint16_t inf) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(0x7fffu);
    if (a == 0x7f800000u) return sign | inf;
    if (a == 0) return sign;
    const int biased = (int)(a >> 23);
    const uint64_t m = biased ? (a & 0x7fffffu) | 0x800000u : (a & 0x7fffffu);
    const int e = (biased ? biased : 1) - 150;  // |x| = m * 2^e
    const int top = 63 - __builtin_clzll(m) + e;  // floor(log2 |x|)
    const int q = std::max(top - mantissa, min_exp);  // the target's step at |x|
    const int shift = q - e;  // > 0: float has more precision than the target
    uint64_t n, rest, half;
    if (shift >= 60) {
        n = 0;
        rest = 1;  // nonzero and below half a step
        half = 2;
    } else {
        n = m >> shift;
        rest = m & ((1ull << shift) - 1);
        half = 1ull << (shift - 1);
    }
    const bool negative = sign != 0;
    bool up = false;
    switch (rounding) {
        case RN: up = rest > half || (rest == half && (n & 1)); break;
        case RZ: up = false; break;
        case RP: up = rest != 0 && !negative; break;
        case RM: up = rest != 0 && negative; break;
        case NONE: break;
    }
    n += up;
    // n * 2^q: subnormal when q is the minimum step and n has no implicit bit; the encoding
    // (exponent field << mantissa) + fraction is the same sum either way.
    const uint64_t bits = ((uint64_t)(q - min_exp) << mantissa) + n;
    if (bits >= inf) {
        // Overflow: to infinity unless rounding toward zero (or away from this sign's infinity).
        const bool to_inf = rounding == RN || (rounding == RP && !negative) || (rounding == RM && negative);
        return sign | (to_inf ? inf : (uint16_t)(inf - 1));
    }
    return sign | (uint16_t)bits;
}

float widen(uint16_t h, Type t) {
    uint32_t u;
    if (t == BF16) {
        u = (uint32_t)h << 16;
        if ((u & 0x7fffffffu) > 0x7f800000u) u = 0x7fffffffu;
    } else {
        const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 31, frac = h & 1023;
        if (exp == 31) {
            u = frac ? 0x7fffffffu : sign | 0x7f800000u;
        } else if (exp == 0) {
            const float v = std::ldexp((float)frac, -24);  // exact
            std::memcpy(&u, &v, 4);
            u |= sign;
        } else {
            u = sign | ((exp + 112) << 23) | (frac << 13);
        }
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

}  // namespace

unsigned short ptx_cvt_to_16(const char* instruction, const char* oc, const char* ic, float in) {
    const Cvt& c = cached_cvt(instruction, oc, ic);
    if (c.src != F32 || c.dst == F32) fail(format("PTX \"%s\": operands of the wrong size", instruction).c_str());
    return c.dst == F16 ? narrow(in, c.rounding, 10, -24, 0x7c00)
                      : narrow(in, c.rounding, 7, -133, 0x7f80);
}

float ptx_cvt_to_32(const char* instruction, const char* oc, const char* ic, unsigned short in) {
    const Cvt& c = cached_cvt(instruction, oc, ic);
    if (c.dst != F32 || c.src == F32) fail(format("PTX \"%s\": operands of the wrong size", instruction).c_str());
    return widen(in, c.src);
}

float widen_16(unsigned short bits, bool bf16) { return widen(bits, bf16 ? BF16 : F16); }

}  // namespace bge_emu
