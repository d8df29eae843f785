// posestream: PoseConv3D pseudo-heatmap volumes on the GPU (the "cuda" raster backend).
//
// One launch rasterizes a whole batch of windows:
//
//     keypoints [N, M, T, V, 3]  (x, y, score on the model's grid; float32, C-contiguous)
//  -> volumes   [N, K, T, H, W]  (fp32, fp16 or bf16; K = V joints or K = number of limbs)
//
// with exactly the rules of the CPU rasterizer (posestream/engines/raster.py, itself PYSKL's
// GeneratePoseTarget), and the same float32 operations in the same order, so that both agree
// within 1e-5 (the only differences left are a couple of ulps of exp):
//
//   joint  J = exp(dx^2 * s) * (exp(dy^2 * s) * c)        s = float32(-1 / (2 sigma^2))
//   limb   L = exp(D^2 * s) * min(c_a, c_b)               D = distance to the segment a-b
//
// - an item (keypoint, or limb) draws nothing when its score is below 1e-3 (either end for a
//   limb; a NaN score never passes) or a coordinate is not finite (tested as isfinite(x + y));
// - it draws only inside PYSKL's window on the integer grid: columns
//   [max(trunc(lo - 3 sigma), 0), min(trunc(hi + 3 sigma) + 1, W)) and rows alike, lo/hi
//   clipped to [-1, size] before the truncation; lo = hi = x for a joint, the box around both
//   ends for a limb;
// - a limb whose ends are less than one pixel apart (|a - b|^2 < 1) is its start keypoint's
//   Gaussian at the start keypoint's score;
// - persons combine by max (NaN propagates like numpy's maximum), never by sum.
//
// Work layout: one thread block per [H, W] plane (n, k, t) (grid-stride over planes). The
// block first turns the M persons' keypoints of its plane into "items" (score, window and
// segment terms) in shared memory, PS_CHUNK persons at a time, then every thread walks the
// plane's pixels with a stride of blockDim.x and takes the max over the items whose window
// holds the pixel. Every output element is written (zeros included), so no memset is needed
// and the kernel can write straight into an engine's input tensor. Consecutive threads write
// consecutive pixels (coalesced stores); per-item work is done once per block, not per pixel,
// and a pixel outside every window costs four integer compares per person. The kernel is
// bound by the output writes (a 17 x 48 x 56 x 56 fp32 volume is 10 MB, its keypoints 20 KB).
// With more than PS_CHUNK persons the later chunks read back and max into the plane.
//
// All per-item and per-pixel math lives in __host__ __device__ functions, and the plane loop
// is one too (thread index and count are arguments; the barrier is a no-op on the host): a
// plain C++ compiler builds this file as well (the CUDA keywords are defined away below), which
// is how the CPU test suite checks the very code the GPU runs against raster.py. Build flags:
// no fused multiply-add (--fmad=false for NVRTC/nvcc, -ffp-contract=off for g++), no fast math:
// numpy rounds every float32 multiply and add on its own.
//
// No #include is needed under NVRTC; fp16/bf16 conversions are written out (round to nearest
// even, as torch and numpy convert), identical on host and device.

#if !defined(__CUDACC__)
// A plain C++ compiler (the CPU tests): no CUDA keywords.
#define __host__
#define __device__
#define __forceinline__ inline
#endif

#if !defined(__CUDACC_RTC__)
#include <cmath>
#include <cstring>
#endif

#ifndef PS_CHUNK
#define PS_CHUNK 64  // persons staged in shared memory at a time (48 bytes each)
#endif

#define PS_EPS 1e-3f  // scores below this draw nothing (PYSKL's EPS)

#if defined(__CUDA_ARCH__)
#define PS_SYNC() __syncthreads()
#else
#define PS_SYNC() ((void)0)
#endif

namespace ps {

// ------------------------------------------------------------------------------------------
// Scalars

__host__ __device__ __forceinline__ unsigned int float_bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    unsigned int u;
    std::memcpy(&u, &f, sizeof u);
    return u;
#endif
}

__host__ __device__ __forceinline__ float bits_float(unsigned int u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
#endif
}

__host__ __device__ __forceinline__ float exp_f32(float x) {
#if defined(__CUDA_ARCH__)
    return expf(x);  // full-precision expf (no fast math): within 2 ulp
#else
    return std::exp(x);
#endif
}

__host__ __device__ __forceinline__ bool is_finite(float f) {
    return (float_bits(f) & 0x7f800000u) != 0x7f800000u;
}

__host__ __device__ __forceinline__ float clip(float v, float lo, float hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

// numpy's maximum: NaN wins.
__host__ __device__ __forceinline__ float nan_max(float best, float v) {
    return (v > best || v != v) ? v : best;
}

// float32 -> IEEE binary16 bits, round to nearest even (numpy's astype(float16), torch's .half()).
__host__ __device__ __forceinline__ unsigned short f32_to_f16(float f) {
    unsigned int x = float_bits(f);
    unsigned int sign = (x >> 16) & 0x8000u;
    unsigned int a = x & 0x7fffffffu;
    if (a == 0u) return (unsigned short)sign;                                       // +-0
    if (a >= 0x7f800000u) return (unsigned short)(sign | (a > 0x7f800000u ? 0x7e00u : 0x7c00u));  // NaN, inf
    if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);                  // >= 65520: inf
    if (a < 0x38800000u) {                                                           // below 2^-14: subnormal
        int e = (int)(a >> 23);
        int shift = 126 - e;            // value / 2^-24 = mantissa >> shift
        if (shift > 24) return (unsigned short)sign;  // below 2^-25: rounds to 0
        unsigned int mant = (a & 0x7fffffu) | 0x800000u;  // e >= 102 here: a normal float32
        unsigned int q = mant >> shift;
        unsigned int rem = mant & ((1u << shift) - 1u);
        unsigned int half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) ++q;
        return (unsigned short)(sign | q);
    }
    unsigned int h = (a - 0x38000000u) >> 13;  // rebias 127 -> 15, drop 13 mantissa bits
    unsigned int rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return (unsigned short)(sign | h);
}

__host__ __device__ __forceinline__ float f16_to_f32(unsigned short h) {
    unsigned int sign = ((unsigned int)h & 0x8000u) << 16;
    unsigned int e = ((unsigned int)h >> 10) & 0x1fu;
    unsigned int m = (unsigned int)h & 0x3ffu;
    if (e == 0u) {
        float v = (float)m * 5.9604644775390625e-8f;  // m * 2^-24, exact
        return sign ? -v : v;
    }
    if (e == 31u) return bits_float(sign | 0x7f800000u | (m << 13));
    return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

// float32 -> bfloat16 bits, round to nearest even (torch's .bfloat16()).
__host__ __device__ __forceinline__ unsigned short f32_to_bf16(float f) {
    unsigned int u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

__host__ __device__ __forceinline__ float bf16_to_f32(unsigned short h) {
    return bits_float((unsigned int)h << 16);
}

// Output element types.
struct OutF32 {
    typedef float T;
    static __host__ __device__ __forceinline__ void store(T* p, float v) { *p = v; }
    static __host__ __device__ __forceinline__ float load(const T* p) { return *p; }
};
struct OutF16 {
    typedef unsigned short T;
    static __host__ __device__ __forceinline__ void store(T* p, float v) { *p = f32_to_f16(v); }
    static __host__ __device__ __forceinline__ float load(const T* p) { return f16_to_f32(*p); }
};
struct OutBF16 {
    typedef unsigned short T;
    static __host__ __device__ __forceinline__ void store(T* p, float v) { *p = f32_to_bf16(v); }
    static __host__ __device__ __forceinline__ float load(const T* p) { return bf16_to_f32(*p); }
};

// ------------------------------------------------------------------------------------------
// Items: one keypoint (joints) or one limb of one person in one frame

struct Item {
    float ax, ay;    // start keypoint (the joint itself for joints)
    float sx, sy;    // segment vector b - a (0 for joints and for limbs shorter than a pixel)
    float ux, uy;    // segment vector / |b - a|^2 (numpy's sx * inv, sy * inv)
    float value;     // the score that scales the Gaussian
    int x0, x1;      // columns [x0, x1) drawn
    int y0, y1;      // rows [y0, y1) drawn; an item that draws nothing has an empty window
};

// PYSKL's window on the integer grid: [max(trunc(lo - reach), 0), min(trunc(hi + reach) + 1, size)).
__host__ __device__ __forceinline__ void window(float lo, float hi, float reach, int size, int& start, int& stop) {
    float fsize = (float)size;
    start = (int)clip(lo - reach, -1.0f, fsize);  // (int) truncates toward zero, like numpy's cast
    if (start < 0) start = 0;
    stop = (int)clip(hi + reach, -1.0f, fsize) + 1;
    if (stop > size) stop = size;
}

__host__ __device__ __forceinline__ void empty_item(Item& it) {
    it.ax = it.ay = it.sx = it.sy = it.ux = it.uy = it.value = 0.0f;
    it.x0 = it.x1 = it.y0 = it.y1 = 0;
}

// p: (x, y, score) of one keypoint.
__host__ __device__ __forceinline__ void joint_item(const float* p, float reach, int height, int width, Item& it) {
    float x = p[0], y = p[1], s = p[2];
    if (!(s >= PS_EPS) || !is_finite(x + y)) {
        empty_item(it);
        return;
    }
    it.ax = x;
    it.ay = y;
    it.sx = it.sy = it.ux = it.uy = 0.0f;
    it.value = s;
    window(x, x, reach, width, it.x0, it.x1);
    window(y, y, reach, height, it.y0, it.y1);
}

// a, b: (x, y, score) of the limb's start and end keypoints.
__host__ __device__ __forceinline__ void limb_item(const float* a, const float* b, float reach, int height, int width,
                                                   Item& it) {
    float ax = a[0], ay = a[1], sa = a[2];
    float bx = b[0], by = b[1], sb = b[2];
    // min(sa, sb) >= EPS, with a NaN score failing as in numpy.
    if (!(sa >= PS_EPS) || !(sb >= PS_EPS) || !is_finite(ax + ay) || !is_finite(bx + by)) {
        empty_item(it);
        return;
    }
    float value = sa < sb ? sa : sb;
    float ex = ax - bx, ey = ay - by;
    float ab2 = ex * ex + ey * ey;
    if (ab2 < 1.0f) {  // shorter than a pixel: the start keypoint's Gaussian at its own score
        bx = ax;
        by = ay;
        value = sa;
        ab2 = 1.0f;
    }
    float sx = bx - ax, sy = by - ay;
    float inv = 1.0f / ab2;
    it.ax = ax;
    it.ay = ay;
    it.sx = sx;
    it.sy = sy;
    it.ux = sx * inv;
    it.uy = sy * inv;
    it.value = value;
    window(ax < bx ? ax : bx, ax < bx ? bx : ax, reach, width, it.x0, it.x1);
    window(ay < by ? ay : by, ay < by ? by : ay, reach, height, it.y0, it.y1);
}

__host__ __device__ __forceinline__ bool inside(const Item& it, int px, int py) {
    return px >= it.x0 && px < it.x1 && py >= it.y0 && py < it.y1;
}

// The joint's value at pixel (px, py), which must be inside its window (separable, like raster.py).
__host__ __device__ __forceinline__ float joint_pixel(const Item& it, int px, int py, float scale) {
    float dx = (float)px - it.ax;
    float dy = (float)py - it.ay;
    float gx = exp_f32(dx * dx * scale);
    float gy = exp_f32(dy * dy * scale) * it.value;
    return gy * gx;
}

// The limb's value at pixel (px, py), which must be inside its window: project onto the
// segment, clamp to its ends, Gaussian of the squared distance (a point item has a zero
// segment vector, so this is the distance to its start keypoint).
__host__ __device__ __forceinline__ float limb_pixel(const Item& it, int px, int py, float scale) {
    float row_dy = (float)py - it.ay;
    float row_along = row_dy * it.uy;
    float dx = (float)px - it.ax;
    float along = dx * it.ux;
    along = along + row_along;
    along = clip(along, 0.0f, 1.0f);
    dx = dx - along * it.sx;
    float dy = row_dy - along * it.sy;
    float d2 = dx * dx + dy * dy;
    return exp_f32(d2 * scale) * it.value;
}

// ------------------------------------------------------------------------------------------
// One [H, W] plane (n, k, t) of the output, by thread `tid` of `nthreads`; `items` holds
// PS_CHUNK items (shared memory on the GPU). Every thread of a block must call it with the
// same plane (it has barriers).

struct Geometry {
    int n, m, t, v, k, height, width, limbs;  // limbs: 0 = joint heatmaps, 1 = limb heatmaps
    float reach;                              // float32(3 sigma)
    float scale;                              // float32(-0.5 / sigma^2)
};

template <class Out>
__host__ __device__ void rasterize_plane(const float* keypoints, const int* pairs, typename Out::T* out,
                                         const Geometry& g, long long plane, int tid, int nthreads, Item* items) {
    const int t = (int)(plane % g.t);
    const long long nk = plane / g.t;
    const int k = (int)(nk % g.k);
    const long long n = nk / g.k;
    const int hw = g.height * g.width;
    typename Out::T* dst = out + plane * (long long)hw;
    const int chunks = g.m > 0 ? (g.m + PS_CHUNK - 1) / PS_CHUNK : 1;  // M = 0 still writes zeros
    for (int c = 0; c < chunks; ++c) {
        const int first = c * PS_CHUNK;
        const int count = g.m - first < PS_CHUNK ? g.m - first : PS_CHUNK;
        PS_SYNC();  // nobody reads the previous chunk's (or plane's) items any more
        for (int i = tid; i < count; i += nthreads) {
            const float* frame = keypoints + (((n * g.m + first + i) * g.t + t) * (long long)g.v) * 3;
            if (g.limbs)
                limb_item(frame + 3 * pairs[2 * k], frame + 3 * pairs[2 * k + 1], g.reach, g.height, g.width, items[i]);
            else
                joint_item(frame + 3 * k, g.reach, g.height, g.width, items[i]);
        }
        PS_SYNC();
        for (int p = tid; p < hw; p += nthreads) {
            const int py = p / g.width;
            const int px = p - py * g.width;
            float best = c == 0 ? 0.0f : Out::load(dst + p);
            for (int i = 0; i < count; ++i) {
                const Item& it = items[i];
                if (inside(it, px, py))
                    best = nan_max(best, g.limbs ? limb_pixel(it, px, py, g.scale) : joint_pixel(it, px, py, g.scale));
            }
            Out::store(dst + p, best);
        }
    }
}

}  // namespace ps

// ------------------------------------------------------------------------------------------
// Kernels (NVRTC/nvcc only). Launch: block = (threads, 1, 1) with any thread count (256 is
// the default), grid = (min(planes, cap), 1, 1) where planes = N * K * T; no dynamic shared
// memory. `pairs`: int32 [K, 2] limb keypoint indices (ignored, but must be a valid pointer,
// for joints).

#if defined(__CUDACC__)

#define PS_KERNEL(NAME, OUT)                                                                          \
    extern "C" __global__ void NAME(const float* __restrict__ keypoints, const int* __restrict__ pairs, \
                                    OUT::T* __restrict__ out, int n, int m, int t, int v, int k,        \
                                    int height, int width, int limbs, float reach, float scale) {      \
        __shared__ ps::Item items[PS_CHUNK];                                                          \
        ps::Geometry g;                                                                               \
        g.n = n; g.m = m; g.t = t; g.v = v; g.k = k;                                                  \
        g.height = height; g.width = width; g.limbs = limbs; g.reach = reach; g.scale = scale;        \
        const long long planes = (long long)n * k * t;                                                \
        for (long long plane = blockIdx.x; plane < planes; plane += gridDim.x)                        \
            ps::rasterize_plane<OUT>(keypoints, pairs, out, g, plane, (int)threadIdx.x,               \
                                     (int)blockDim.x, items);                                         \
    }

PS_KERNEL(posestream_rasterize_f32, ps::OutF32)
PS_KERNEL(posestream_rasterize_f16, ps::OutF16)
PS_KERNEL(posestream_rasterize_bf16, ps::OutBF16)

#endif
