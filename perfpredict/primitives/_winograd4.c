/* conv.winograd4: a 3x3 stride-1 convolution as Winograd F(4x4, 3x3) on channels-last (NHWC) float tensors.
 *
 * Each 4x4 block of outputs comes from a 6x6 block of inputs: the input tiles are transformed (V = B^T d B), the
 * 36 transformed positions are 36 independent products over the channels (M[a] = V[a] U[a]; V[a]: tiles x C,
 * U[a]: C x K, the transformed weights G g G^T made once by the caller), and the products are transformed back
 * (Y = A^T M A) with the bias, a residual and a clamp applied as the output is written: 36 multiplies per 16
 * outputs and channel pair instead of 144, paid for by the transforms and by transformed weights 4x the size.
 * The matrices are the standard F(4x4, 3x3) ones of Lavin and Gray.
 *
 * All of it is plain C: the transforms work on whole vectors of 16 channels (GCC's vector extension, one
 * AVX-512 register where the CPU has it), the products in blocks of 6 tiles by 32 output channels held in
 * registers over the input channels. Where the transformed weights are small (up to 1 MiB) the tiles go through
 * all three steps in blocks of at most TB_MAX, so a block's transformed tiles and products stay in the core's
 * caches instead of being written out whole (which evicted what the next layers read); where they are large each
 * step runs over all the tiles, so that each thread reads only its positions' weights, once. Threads: OpenMP, on
 * the libgomp torch loaded, so torch.set_num_threads governs it. The caller passes a scratch buffer of
 * pp_wino_scratch_bytes(nthr) per call (the block buffers), 64-byte aligned. */
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define CH 16 /* channels per vector pass: one AVX-512 register of floats */

#define MR 6  /* rows (tiles) of one product block: 6 x 2 accumulator registers */
#define NR 32 /* output channels of one product block: two AVX-512 registers of floats */
#define TB_MAX 24 /* tiles per block at most: a block's tiles and products stay in a core's L2 */
#define BLOCKED_WEIGHTS (1 << 20) /* transformed weights up to this many bytes: tiles in blocks, else whole */

typedef struct {
    int n, c, h, w, k, oh, ow, pt, pl, th, tw, t;
    int kp;      /* output channels rounded up to NR */
    int blocked; /* tiles in blocks (small transformed weights), else all tiles at each step */
    float lo, hi;
    int residual;
    float *bias;
    float *u; /* the transformed weights, 36 x c x kp, zero past k */
} pp_wino;

static size_t align64(size_t b) { return (b + 63) / 64 * 64; }

/* output channels rounded up to NR: the products' row length */
static int padded_k(int k) { return (k + NR - 1) / NR * NR; }

/* whether a layer's tiles go in blocks: its transformed weights (36 x c x kp floats) are small */
static int blocked(int c, int kp) { return (size_t)36 * c * kp * sizeof(float) <= BLOCKED_WEIGHTS; }

/* tiles per block with nthr threads: enough blocks for every thread, at most TB_MAX, a multiple of MR */
static int block_rows(int t, int nthr) {
    int rows = (t + nthr - 1) / nthr;
    rows = (rows + MR - 1) / MR * MR;
    return rows < TB_MAX ? rows : TB_MAX;
}

/* the bytes of one set of buffers for rows tiles: transformed tiles (36 x rows x c) and products (36 x rows x kp) */
static size_t buffer_bytes(int rows, int c, int kp) {
    return align64((size_t)36 * rows * c * sizeof(float)) + align64((size_t)36 * rows * kp * sizeof(float));
}

/* the scratch one call on nthr threads needs for n images of c channels into k channels of oh x ow outputs, before
 * any primitive is made (memory estimates): each thread's block buffers, or one set for all the tiles */
size_t pp_wino_scratch_for(int n, int c, int k, int oh, int ow, int nthr) {
    const int t = n * ((oh + 3) / 4) * ((ow + 3) / 4), kp = padded_k(k);
    if (blocked(c, kp)) return (size_t)nthr * buffer_bytes(block_rows(t, nthr), c, kp);
    return buffer_bytes((t + MR - 1) / MR * MR, c, kp);
}

void pp_wino_destroy(pp_wino *p) {
    if (p == NULL) return;
    free(p->bias);
    free(p->u);
    free(p);
}

/* shape: n, c, h, w (input), k, oh, ow (output); pads top, left. u: the transformed weights, 36 x c x k floats
 * (position-major: u[a][c][k]); bias: k floats or NULL; the output is clamped to [lo, hi]; residual: 1 adds a
 * tensor of the output's shape (NHWC, given with each call) before the clamp. NULL when out of memory. */
pp_wino *pp_wino_create(int n, int c, int h, int w, int k, int oh, int ow, int pt, int pl, const float *u,
                        const float *bias, float lo, float hi, int residual) {
    pp_wino *p = calloc(1, sizeof(*p));
    if (p == NULL) return NULL;
    p->n = n, p->c = c, p->h = h, p->w = w, p->k = k, p->oh = oh, p->ow = ow, p->pt = pt, p->pl = pl;
    p->th = (oh + 3) / 4, p->tw = (ow + 3) / 4, p->t = n * p->th * p->tw;
    p->kp = padded_k(k);
    p->blocked = blocked(c, p->kp);
    p->lo = lo, p->hi = hi, p->residual = residual;
    p->bias = calloc((size_t)p->kp, sizeof(float));
    p->u = aligned_alloc(64, align64((size_t)36 * c * p->kp * sizeof(float)));
    if (p->bias == NULL || p->u == NULL) {
        pp_wino_destroy(p);
        return NULL;
    }
    if (bias) memcpy(p->bias, bias, (size_t)k * sizeof(float));
    for (size_t r = 0; r < (size_t)36 * c; r++) {
        memcpy(p->u + r * p->kp, u + r * k, (size_t)k * sizeof(float));
        memset(p->u + r * p->kp + k, 0, (size_t)(p->kp - k) * sizeof(float));
    }
    return p;
}

typedef float v16 __attribute__((vector_size(64), aligned(4))); /* CH floats; unaligned loads and stores */

typedef int i16 __attribute__((vector_size(64)));

static inline v16 vmax(v16 a, v16 b) {
    const i16 m = a < b;
    return (v16)(((i16)b & m) | ((i16)a & ~m));
}

static inline v16 vmin(v16 a, v16 b) {
    const i16 m = a > b;
    return (v16)(((i16)b & m) | ((i16)a & ~m));
}

static inline v16 load(const float *src, int n) {
    if (n == CH) return *(const v16 *)src;
    float tmp[CH] = {0};
    memcpy(tmp, src, (size_t)n * sizeof(float));
    return *(const v16 *)tmp;
}

static inline void store(float *dst, v16 x, int n) {
    if (n == CH)
        *(v16 *)dst = x;
    else
        memcpy(dst, &x, (size_t)n * sizeof(float));
}

/* B^T z for a 6-vector z of channel vectors, into o */
static inline void input_rows(const v16 z[6], v16 o[6]) {
    o[0] = 4.0f * z[0] - 5.0f * z[2] + z[4];
    o[1] = -4.0f * (z[1] + z[2]) + z[3] + z[4];
    o[2] = 4.0f * (z[1] - z[2]) - z[3] + z[4];
    o[3] = 2.0f * (z[3] - z[1]) - z[2] + z[4];
    o[4] = 2.0f * (z[1] - z[3]) - z[2] + z[4];
    o[5] = 4.0f * z[1] - 5.0f * z[3] + z[5];
}

/* A^T z for a 6-vector z of channel vectors, into o (4) */
static inline void output_rows(const v16 z[6], v16 o[4]) {
    const v16 a12 = z[1] + z[2], s12 = z[1] - z[2], a34 = z[3] + z[4], s34 = z[3] - z[4];
    o[0] = z[0] + a12 + a34;
    o[1] = s12 + 2.0f * s34;
    o[2] = a12 + 4.0f * a34;
    o[3] = s12 + 8.0f * s34 + z[5];
}

/* V[a][t][:] for the 6x6 input tile whose top-left is (y0, x0) in image b: V = B^T d B, CH channels at a time */
static void tile_in(const pp_wino *p, const float *restrict x, float *restrict v, int rows, int t, int b, int y0,
                    int x0) {
    const int c = p->c, h = p->h, w = p->w;
    const size_t plane = (size_t)rows * c;
    const v16 zero = {0};
    for (int c0 = 0; c0 < c; c0 += CH) {
        const int cw = c - c0 < CH ? c - c0 : CH;
        v16 d[6][6], col[6], r[6][6];
        for (int i = 0; i < 6; i++) {
            const int yy = y0 + i;
            for (int j = 0; j < 6; j++) {
                const int xx = x0 + j;
                d[j][i] = (yy < 0 || yy >= h || xx < 0 || xx >= w) ? zero
                          : load(x + (((size_t)b * h + yy) * w + xx) * c + c0, cw);
            }
        }
        for (int j = 0; j < 6; j++) { /* columns: r = B^T d */
            input_rows(d[j], col);
            for (int i = 0; i < 6; i++) r[i][j] = col[i];
        }
        for (int i = 0; i < 6; i++) { /* rows: V = r B */
            v16 o[6];
            input_rows(r[i], o);
            for (int j = 0; j < 6; j++) store(v + (size_t)(i * 6 + j) * plane + (size_t)t * c + c0, o[j], cw);
        }
    }
}

/* the 4x4 output tile at (y0, x0) of image b from the products M[a][t][:]: Y = A^T M A, plus the bias and the
 * residual, clamped */
static void tile_out(const pp_wino *p, const float *restrict m, float *restrict y, const float *restrict res, int rows,
                     int t, int b, int y0, int x0) {
    const int k = p->k, oh = p->oh, ow = p->ow, ld = p->kp;
    const size_t plane = (size_t)rows * ld;
    const v16 lo = p->lo - (v16){0}, hi = p->hi - (v16){0};
    for (int k0 = 0; k0 < k; k0 += CH) {
        const int kw = k - k0 < CH ? k - k0 : CH;
        const v16 bias = load(p->bias + k0, CH); /* the bias is zero past k */
        v16 s[6][6], col[4], r[4][6];
        for (int a = 0; a < 36; a++) /* rows past k in the products are zero: whole vectors are read */
            s[a % 6][a / 6] = load(m + (size_t)a * plane + (size_t)t * ld + k0, CH);
        for (int j = 0; j < 6; j++) { /* columns: r = A^T s */
            output_rows(s[j], col);
            for (int i = 0; i < 4; i++) r[i][j] = col[i];
        }
        for (int i = 0; i < 4 && y0 + i < oh; i++) { /* rows: Y = r A */
            v16 o[4];
            output_rows(r[i], o);
            for (int j = 0; j < 4 && x0 + j < ow; j++) {
                const size_t at = (((size_t)b * oh + y0 + i) * ow + x0 + j) * k + k0;
                v16 val = o[j] + bias;
                if (res) val += load(res + at, kw);
                val = vmin(vmax(val, lo), hi);
                store(y + at, val, kw);
            }
        }
    }
}

/* m (tp x kp) = v (tp x c) . u (c x kp): blocks of MR rows by NR columns held in registers over the channels */
static void product(const float *restrict v, const float *restrict u, float *restrict m, int tp, int c, int kp) {
    for (int k0 = 0; k0 < kp; k0 += NR) {
        for (int r0 = 0; r0 < tp; r0 += MR) {
            float acc[MR][NR];
            for (int r = 0; r < MR; r++)
                for (int q = 0; q < NR; q++) acc[r][q] = 0.0f;
            const float *restrict vr = v + (size_t)r0 * c;
            for (int ci = 0; ci < c; ci++) {
                const float *restrict uu = u + (size_t)ci * kp + k0;
                for (int r = 0; r < MR; r++) {
                    const float a = vr[(size_t)r * c + ci];
                    for (int q = 0; q < NR; q++) acc[r][q] += a * uu[q];
                }
            }
            for (int r = 0; r < MR; r++) {
                float *restrict dst = m + (size_t)(r0 + r) * kp + k0;
                for (int q = 0; q < NR; q++) dst[q] = acc[r][q];
            }
        }
    }
}

/* the scratch one call on nthr threads needs */
size_t pp_wino_scratch_bytes(const pp_wino *p, int nthr) {
    return pp_wino_scratch_for(p->n, p->c, p->k, p->oh, p->ow, nthr);
}

/* Blocked: each thread takes blocks of tiles in turn and carries each through the three steps (transform, the 36
 * products, transform back) while it is in its caches; every block reads all the transformed weights, so this is
 * for layers whose transformed weights are small. */
static void run_blocked(const pp_wino *p, const float *x, float *y, void *scratch, const float *residual, int nthr) {
    const int per_image = p->th * p->tw, rows = block_rows(p->t, nthr), nblk = (p->t + rows - 1) / rows;
    const size_t mine = buffer_bytes(rows, p->c, p->kp);
#pragma omp parallel num_threads(nthr)
    {
        const int ithr = omp_get_thread_num(), nt = omp_get_num_threads();
        float *v = (float *)((char *)scratch + (size_t)ithr * mine);
        float *m = (float *)((char *)v + align64((size_t)36 * rows * p->c * sizeof(float)));
        for (int blk = ithr; blk < nblk; blk += nt) {
            const int t0 = blk * rows, tb = p->t - t0 < rows ? p->t - t0 : rows;
            for (int i = 0; i < tb; i++) {
                const int t = t0 + i, b = t / per_image, ty = t % per_image / p->tw, tx = t % p->tw;
                tile_in(p, x, v, rows, i, b, ty * 4 - p->pt, tx * 4 - p->pl);
            }
            for (int a = 0; a < 36; a++) {
                float *va = v + (size_t)a * rows * p->c;
                if (tb < rows) /* the rows past the last tile: zeros, their products unused */
                    memset(va + (size_t)tb * p->c, 0, (size_t)(rows - tb) * p->c * sizeof(float));
                product(va, p->u + (size_t)a * p->c * p->kp, m + (size_t)a * rows * p->kp, rows, p->c, p->kp);
            }
            for (int i = 0; i < tb; i++) {
                const int t = t0 + i, b = t / per_image, ty = t % per_image / p->tw, tx = t % p->tw;
                tile_out(p, m, y, residual, rows, i, b, ty * 4, tx * 4);
            }
        }
    }
}

/* Whole: every tile transformed, then the 36 products split between the threads (each reads its positions'
 * transformed weights once), then every tile transformed back: for layers whose transformed weights are large. */
static void run_whole(const pp_wino *p, const float *x, float *y, void *scratch, const float *residual, int nthr) {
    const int per_image = p->th * p->tw, rows = (p->t + MR - 1) / MR * MR;
    float *v = (float *)scratch;
    float *m = (float *)((char *)scratch + align64((size_t)36 * rows * p->c * sizeof(float)));
#pragma omp parallel num_threads(nthr)
    {
#pragma omp for schedule(static)
        for (int t = 0; t < p->t; t++) {
            const int b = t / per_image, ty = t % per_image / p->tw, tx = t % p->tw;
            tile_in(p, x, v, rows, t, b, ty * 4 - p->pt, tx * 4 - p->pl);
        }
#pragma omp for schedule(static)
        for (int a = 0; a < 36; a++) {
            float *va = v + (size_t)a * rows * p->c;
            if (p->t < rows) /* the rows past the last tile: zeros, their products unused */
                memset(va + (size_t)p->t * p->c, 0, (size_t)(rows - p->t) * p->c * sizeof(float));
            product(va, p->u + (size_t)a * p->c * p->kp, m + (size_t)a * rows * p->kp, rows, p->c, p->kp);
        }
#pragma omp for schedule(static)
        for (int t = 0; t < p->t; t++) {
            const int b = t / per_image, ty = t % per_image / p->tw, tx = t % p->tw;
            tile_out(p, m, y, residual, rows, t, b, ty * 4, tx * 4);
        }
    }
}

/* one call on nthr threads: x (n, h, w, c) into y (n, oh, ow, k), residual (n, oh, ow, k) or NULL; scratch of
 * pp_wino_scratch_bytes(nthr) bytes, 64-byte aligned. */
void pp_wino_run(const pp_wino *p, const float *x, float *y, void *scratch, const float *residual, int nthr) {
    if (!p->residual) residual = NULL;
    if (p->blocked)
        run_blocked(p, x, y, scratch, residual, nthr);
    else
        run_whole(p, x, y, scratch, residual, nthr);
}
