/* Dispatch, threading, the GEMM driver and the portable path (plain C11 + __builtin_popcountll). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stddef.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bvkernels.h"

#define BV_MCHUNK 64            /* rows of A per job: a multiple of every path's mr */
#define BV_MIN_WORK (1 << 18)   /* word pairs per thread below which a thread does not pay for itself */
#define BV_MAX_THREADS 256

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ------------------------------------------------------------------------------------------ threads */

typedef void (*bv_range_fn)(void *ctx, int64_t begin, int64_t end);

typedef struct {
    bv_range_fn fn;
    void *ctx;
    int64_t begin, end;
} bv_job;

static void *bv_thread_main(void *arg) {
    bv_job *job = (bv_job *)arg;
    job->fn(job->ctx, job->begin, job->end);
    return NULL;
}

/* fn over [0, n) in `threads` contiguous ranges; the calling thread takes the first one. A thread that
 * cannot be created has its range run by the caller, so the result never depends on the thread count. */
static void bv_parallel_for(int threads, int64_t n, bv_range_fn fn, void *ctx) {
    if (threads > n) threads = (int)n;
    if (threads > BV_MAX_THREADS) threads = BV_MAX_THREADS;
    if (threads <= 1) {
        if (n > 0) fn(ctx, 0, n);
        return;
    }
    pthread_t tid[BV_MAX_THREADS];
    bv_job jobs[BV_MAX_THREADS];
    int started[BV_MAX_THREADS];
    for (int t = 0; t < threads; t++) {
        jobs[t].fn = fn;
        jobs[t].ctx = ctx;
        jobs[t].begin = n * t / threads;
        jobs[t].end = n * (t + 1) / threads;
        started[t] = 0;
    }
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tid[t], NULL, bv_thread_main, &jobs[t]) == 0;
    fn(ctx, jobs[0].begin, jobs[0].end);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            fn(ctx, jobs[t].begin, jobs[t].end);
    }
}

static int bv_threads_for(int threads, int64_t work) {
    int64_t useful = 1 + work / BV_MIN_WORK;
    return threads < useful ? (threads < 1 ? 1 : threads) : (int)useful;
}

/* ------------------------------------------------------------------------------------------ dispatch */

BV_API int bv_abi_version(void) { return BV_ABI_VERSION; }

BV_API int bv_supported_paths(void) {
    int mask = 1 << BV_PORTABLE;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) mask |= 1 << BV_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("popcnt"))
        mask |= 1 << BV_AVX512;
#endif
    return mask;
}

static const bv_path *bv_get_path(int path) {
    if (path < 0 || path > BV_AVX512 || !(bv_supported_paths() & (1 << path))) return NULL;
#if defined(__x86_64__) || defined(__i386__)
    if (path == BV_AVX512) return &bv_path_avx512;
    if (path == BV_AVX2) return &bv_path_avx2;
#endif
    return &bv_path_portable;
}

/* ------------------------------------------------------------------------------------------ GEMM */

typedef struct {
    const bv_gemm_args *g;
    const bv_path *path;
    int64_t mchunks, npanels;
} bv_gemm_ctx;

static void bv_gemm_range(void *vctx, int64_t begin, int64_t end) {
    const bv_gemm_ctx *c = (const bv_gemm_ctx *)vctx;
    const int mr = c->path->mr;
    for (int64_t job = begin; job < end; job++) {  /* job = (batch, row chunk, panel), panel fastest */
        int64_t p = job % c->npanels, rest = job / c->npanels;
        int64_t chunk = rest % c->mchunks, b = rest / c->mchunks;
        int64_t i_end = min64((chunk + 1) * BV_MCHUNK, c->g->m);
        for (int64_t i = chunk * BV_MCHUNK; i < i_end; i += mr)
            c->path->tile(c->g, b, i, (int)min64(mr, i_end - i), p);
    }
}

BV_API int bv_gemm(int path, const bv_gemm_args *g, int threads) {
    const bv_path *kernels = bv_get_path(path);
    if (kernels == NULL) return -1;
    if (g->batch <= 0 || g->m <= 0 || g->n <= 0) return 0;
    bv_gemm_ctx ctx = {g, kernels, (g->m + BV_MCHUNK - 1) / BV_MCHUNK, (g->n + BV_NR - 1) / BV_NR};
    int64_t jobs = g->batch * ctx.mchunks * ctx.npanels;
    int64_t work = g->batch * g->m * g->n * (g->words > 0 ? g->words : 1);
    bv_parallel_for(bv_threads_for(threads, work), jobs, bv_gemm_range, &ctx);
    return 0;
}

/* The epilogue every path computes, written out for one output (scalar paths and edge checks). The float
 * operations and their order match the SIMD epilogues: ((float) r * row factor) * col_scale + bias + out. */
void bv_store_scalar(const bv_gemm_args *g, int64_t b, int64_t i, int64_t j, int64_t cnt) {
    int64_t sub = g->row_sub ? g->row_sub[b * g->stride_row_sub + i] : 0;
    int32_t r = (int32_t)(g->base + g->mul * cnt - sub);
    int64_t o = b * g->stride_c + i * g->ldc + j;
    if (g->out_f32 == NULL) {
        g->out_i32[o] = g->accumulate ? g->out_i32[o] + r : r;
        return;
    }
    float s = 1.0f;
    if (g->row_scale) s = g->row_scale[b * g->stride_row_scale + i];
    if (g->batch_scale) s = s * g->batch_scale[b];
    float y = (float)r * s;
    if (g->col_scale) y = y * g->col_scale[b * g->stride_col_scale + j];
    if (g->bias) y = y + g->bias[j];
    if (g->accumulate) y = y + g->out_f32[o];
    g->out_f32[o] = y;
}

/* ------------------------------------------------------------------------------------------ packing */

uint64_t *bv_pack_dest(const bv_pack_args *pa, int64_t r) {
    if (!pa->panel) return pa->out + r * pa->ldo;
    int64_t grp = r / pa->group, n = r % pa->group;
    return pa->out + grp * pa->stride_group + (n / BV_NR) * pa->words * BV_NR + (n % BV_NR);
}

typedef struct {
    const bv_pack_args *pa;
    bv_pack_fn fn;
} bv_pack_ctx;

static void bv_pack_range(void *vctx, int64_t begin, int64_t end) {
    const bv_pack_ctx *c = (const bv_pack_ctx *)vctx;
    c->fn(c->pa, begin, end);
}

static int bv_pack_run(const bv_pack_args *pa, bv_pack_fn fn, int threads) {
    bv_pack_ctx ctx = {pa, fn};
    bv_parallel_for(bv_threads_for(threads, pa->rows * (pa->k / 8 + 1)), pa->rows, bv_pack_range, &ctx);
    return 0;
}

BV_API int bv_pack_f32(int path, const bv_pack_args *pa, int threads) {
    const bv_path *kernels = bv_get_path(path);
    return kernels == NULL ? -1 : bv_pack_run(pa, kernels->pack_f32, threads);
}

BV_API int bv_pack_u8(int path, const bv_pack_args *pa, int threads) {
    const bv_path *kernels = bv_get_path(path);
    return kernels == NULL ? -1 : bv_pack_run(pa, kernels->pack_u8, threads);
}

BV_API void bv_panelize(const uint64_t *src, int64_t n, int64_t words, int64_t lds, uint64_t *dst) {
    int64_t panels = (n + BV_NR - 1) / BV_NR;
    for (int64_t p = 0; p < panels; p++)
        for (int64_t w = 0; w < words; w++)
            for (int64_t c = 0; c < BV_NR; c++) {
                int64_t row = p * BV_NR + c;
                dst[(p * words + w) * BV_NR + c] = row < n ? src[row * lds + w] : 0;
            }
}

BV_API void bv_row_popcount(const uint64_t *a, int64_t rows, int64_t words, int64_t lda, int32_t *out) {
    for (int64_t r = 0; r < rows; r++) {
        int32_t cnt = 0;
        for (int64_t w = 0; w < words; w++) cnt += __builtin_popcountll(a[r * lda + w]);
        out[r] = cnt;
    }
}

/* ------------------------------------------------------------------------------------------ fused */

/* One call per binarized layer: pack A's float rows (pa, rows = g->batch * g->m) into scratch words, count
 * their set bits as row_sub when `sub_popcount` ({0,1} x {+-1}: 2 popcount(m & v) - popcount(m)), then run
 * the GEMM g on them (g->a, lda, stride_a and row_sub are filled here). -1: path unsupported, -2: no memory. */
BV_API int bv_pack_gemm(int path, const bv_pack_args *pa, const bv_gemm_args *g, int sub_popcount, int threads) {
    const bv_path *kernels = bv_get_path(path);
    if (kernels == NULL) return -1;
    if (pa->rows != g->batch * g->m || pa->words != g->words) return -3;
    size_t bytes = (size_t)(pa->rows * pa->words) * sizeof(uint64_t) + 64;
    uint64_t *buf = malloc(bytes);
    int32_t *sub = sub_popcount ? malloc((size_t)pa->rows * sizeof(int32_t) + 4) : NULL;
    if (buf == NULL || (sub_popcount && sub == NULL)) {
        free(buf);
        free(sub);
        return -2;
    }
    bv_pack_args p = *pa;
    p.out = buf;
    p.ldo = pa->words;
    p.panel = 0;
    bv_pack_run(&p, kernels->pack_f32, threads);
    bv_gemm_args a = *g;
    a.a = buf;
    a.lda = pa->words;
    a.stride_a = g->m * pa->words;
    if (sub != NULL) {
        bv_row_popcount(buf, pa->rows, pa->words, pa->words, sub);
        a.row_sub = sub;
        a.stride_row_sub = g->m;
    }
    int rc = bv_gemm(path, &a, threads);
    free(buf);
    free(sub);
    return rc;
}

/* ------------------------------------------------------------------------------------------ int8 */

/* BitNet absmax codes of `rows` rows of k floats (row r at x + r * ldx): gamma = max(max |x|, smin) over each
 * row (per_row) or over all rows, code = clamp(rint(x * (qb / gamma)), -qb, qb - 1) as int8 (rows x k, dense),
 * gamma into gamma[rows or 1]. The fp32 operations of AbsMax.quantize, in its order (`qb / gamma` is torch's
 * reciprocal times qb; rint: half to even, as torch.round); |x| is compared as integer bits, which order non-negative floats (and put NaN on top). */
static inline __attribute__((always_inline)) void absmax_i8_body(const float *x, int64_t rows, int64_t k,
                                                                 int64_t ldx, int per_row, float qb, float smin,
                                                                 int8_t *codes, float *gamma) {
    uint32_t top = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (per_row) top = 0;
        const float *xr = x + r * ldx;
        for (int64_t j = 0; j < k; j++) {
            uint32_t u;
            memcpy(&u, xr + j, 4);
            u &= 0x7FFFFFFFu;
            top = u > top ? u : top;
        }
        if (per_row || r == rows - 1) {
            float g;
            memcpy(&g, &top, 4);
            g = g < smin ? smin : g; /* clamp_min; NaN stays NaN */
            if (per_row) gamma[r] = g; else gamma[0] = g;
        }
    }
    for (int64_t r = 0; r < rows; r++) {
        const float inv = (1.0f / gamma[per_row ? r : 0]) * qb, lo = -qb, hi = qb - 1.0f; /* torch: qb / t */
        const float *xr = x + r * ldx;
        int8_t *cr = codes + r * k;
        for (int64_t j = 0; j < k; j++) {
            float c = rintf(xr[j] * inv);
            c = c < lo ? lo : c;
            c = c > hi ? hi : c;
            cr[j] = (int8_t)c;
        }
    }
}

static void absmax_i8_portable(const float *x, int64_t rows, int64_t k, int64_t ldx, int per_row, float qb,
                               float smin, int8_t *codes, float *gamma) {
    absmax_i8_body(x, rows, k, ldx, per_row, qb, smin, codes, gamma);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) static void absmax_i8_avx2(const float *x, int64_t rows, int64_t k, int64_t ldx,
                                                           int per_row, float qb, float smin, int8_t *codes,
                                                           float *gamma) {
    absmax_i8_body(x, rows, k, ldx, per_row, qb, smin, codes, gamma);
}
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void absmax_i8_avx512(
    const float *x, int64_t rows, int64_t k, int64_t ldx, int per_row, float qb, float smin, int8_t *codes,
    float *gamma) {
    absmax_i8_body(x, rows, k, ldx, per_row, qb, smin, codes, gamma);
}
#endif

BV_API int bv_absmax_i8(int path, const float *x, int64_t rows, int64_t k, int64_t ldx, int per_row, float qb,
                        float smin, int8_t *codes, float *gamma) {
    if (bv_get_path(path) == NULL) return -1;
    if (rows <= 0) return 0;
#if defined(__x86_64__) || defined(__i386__)
    if (path == BV_AVX512) {
        absmax_i8_avx512(x, rows, k, ldx, per_row, qb, smin, codes, gamma);
        return 0;
    }
    if (path == BV_AVX2) {
        absmax_i8_avx2(x, rows, k, ldx, per_row, qb, smin, codes, gamma);
        return 0;
    }
#endif
    absmax_i8_portable(x, rows, k, ldx, per_row, qb, smin, codes, gamma);
    return 0;
}

/* The float epilogue of an int8 product r (rows x n int32, dense), in the order of PackedLinear._int8:
 * y = (float)(r + shift * wsum[j]) * step[i] * col[j] (+ eta[i] * (col[j] * (float)wsum[j])) (+ bias[j]);
 * step / eta: one value (stride 0) or one per row (stride 1); eta, bias may be NULL. */
BV_API void bv_i8_epilogue(const int32_t *r, int64_t rows, int64_t n, int32_t shift, const int32_t *wsum,
                           const float *step, int64_t stride_step, const float *col, const float *eta,
                           int64_t stride_eta, const float *bias, float *out) {
    for (int64_t i = 0; i < rows; i++) {
        const float s = step[i * stride_step], e = eta ? eta[i * stride_eta] : 0.0f;
        const int32_t *ri = r + i * n;
        float *yi = out + i * n;
        for (int64_t j = 0; j < n; j++) {
            float y = (float)(ri[j] + shift * wsum[j]) * s * col[j];
            if (eta) y = y + e * (col[j] * (float)wsum[j]);
            if (bias) y = y + bias[j];
            yi[j] = y;
        }
    }
}

/* ------------------------------------------------------------------------------------------ portable */

static void bv_tile_portable(const bv_gemm_args *g, int64_t b, int64_t i0, int mr, int64_t p) {
    const uint64_t *pn = g->b + b * g->stride_b + p * g->words * BV_NR;
    int64_t nc = min64(BV_NR, g->n - p * BV_NR);
    for (int r = 0; r < mr; r++) {
        const uint64_t *a = g->a + b * g->stride_a + (i0 + r) * g->lda;
        for (int64_t c = 0; c < nc; c++) {
            int64_t cnt = 0;
            for (int64_t w = 0; w < g->words; w++) {
                uint64_t x = g->op == BV_OP_AND ? a[w] & pn[w * BV_NR + c] : a[w] ^ pn[w * BV_NR + c];
                cnt += __builtin_popcountll(x);
            }
            bv_store_scalar(g, b, i0 + r, p * BV_NR + c, cnt);
        }
    }
}

static void bv_pack_f32_portable(const bv_pack_args *pa, int64_t r0, int64_t r1) {
    const int64_t ws = pa->panel ? BV_NR : 1;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = (const float *)pa->x + r * pa->ldx;
        const float t = pa->thresh ? pa->thresh[r] : pa->thresh0;
        uint64_t *dst = bv_pack_dest(pa, r);
        for (int64_t w = 0; w < pa->words; w++) {
            dst[w * ws] = bv_bits_f32(x + 64 * w, min64(64, pa->k - 64 * w), t, pa->strict);
        }
    }
}

static void bv_pack_u8_portable(const bv_pack_args *pa, int64_t r0, int64_t r1) {
    const int64_t ws = pa->panel ? BV_NR : 1;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *x = (const uint8_t *)pa->x + r * pa->ldx;
        uint64_t *dst = bv_pack_dest(pa, r);
        for (int64_t w = 0; w < pa->words; w++) {
            dst[w * ws] = bv_bits_u8(x + 64 * w, min64(64, pa->k - 64 * w));
        }
    }
}

const bv_path bv_path_portable = {1, bv_tile_portable, bv_pack_f32_portable, bv_pack_u8_portable};
