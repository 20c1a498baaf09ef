/* Dropout masks drawn exactly as torch's CPU `bernoulli_(keep)` draws them, without its per-element overhead.
 *
 * Built by posym.ckernel (`cc -O3 -march=native -c`, no fast-math: every operation here is exact).  Where torch
 * samples Bernoulli variables with its own Mersenne Twister (on some CPUs it uses MKL's generator instead),
 * `noise = torch.empty(n).bernoulli_(keep).div_(keep)` takes, for every element in memory order, two 32-bit words
 * (hi, lo) of the generator, forms the double u = ((hi << 32 | lo) mod 2^53) * 2^-53 and writes 1 if u < keep,
 * else 0; the division then turns the ones into `scale` = 1.0f / (float)keep.  This kernel does the same with the
 * twist and the tempering done in blocks of 624 words, and the comparison made on the integers:
 * u < keep  <=>  (hi << 32 | lo) mod 2^53 < keep * 2^53  <=>  that integer < ceil(keep * 2^53) (keep * 2^53 is
 * exact, a power-of-two scaling).  posym.dropout checks the result against torch's own kernel before using it.
 *
 * `state` is torch's CPU generator state as `torch.Generator.get_state()` returns it (5056 bytes): `left` (int32)
 * at byte 8, `next` (uint64) at byte 16, the 624 words of the twister (each in a uint64) from byte 24.  It is read
 * and written in place, so that `set_state` afterwards leaves the generator where torch's kernel would have.
 */
#include <stdint.h>
#include <string.h>

#define MT_N 624
#define MT_M 397

static inline uint32_t twist(uint32_t u, uint32_t v)
{
    uint32_t y = (u & 0x80000000u) | (v & 0x7fffffffu);
    return (y >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
}

static void next_state(uint32_t *restrict s)
{
    int i = 0;
    for (; i < MT_N - MT_M; i++)
        s[i] = s[i + MT_M] ^ twist(s[i], s[i + 1]);
    for (; i < MT_N - 1; i++)
        s[i] = s[i + MT_M - MT_N] ^ twist(s[i], s[i + 1]);
    s[MT_N - 1] = s[MT_M - 1] ^ twist(s[MT_N - 1], s[0]);
}

static inline uint32_t temper(uint32_t y)
{
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

static inline float draw(uint32_t hi, uint32_t lo, int64_t threshold, float scale)
{
    int64_t v = (int64_t)(((uint64_t)(hi & 0x1fffffu) << 32) | lo);  /* the low 53 bits of hi:lo */
    return v < threshold ? scale : 0.0f;
}

/* Write n mask values (scale or 0) to out; threshold = ceil(keep * 2^53).  Returns 0, or 1 for a state torch
 * would not have written (left outside 1..624 or next outside 0..624). */
int posym_dropout_mask(float *restrict out, long n, int64_t threshold, float scale, unsigned char *state)
{
    int32_t left;
    uint64_t next;
    uint32_t s[MT_N], w[MT_N];
    memcpy(&left, state + 8, 4);
    memcpy(&next, state + 16, 8);
    if (left < 1 || left > MT_N || next > MT_N)
        return 1;
    for (int i = 0; i < MT_N; i++) {
        uint64_t v;
        memcpy(&v, state + 24 + 8 * i, 8);
        s[i] = (uint32_t)v;
    }
    long k = 0;
    int carry = 0;  /* a pair split by a twist: its first word is in hi */
    uint32_t hi = 0;
    while (k < n) {
        if (left == 1) {  /* torch's engine: the next draw decrements left to 0, twists, and reads word 0 */
            next_state(s);
            left = MT_N + 1;
            next = 0;
        }
        long avail = left - 1;  /* words next .. 623 */
        long need = 2 * (n - k) - carry;
        long take = avail < need ? avail : need;
        for (long t = 0; t < take; t++)
            w[t] = temper(s[next + t]);
        long t = 0;
        if (carry) {
            out[k++] = draw(hi, w[0], threshold, scale);
            t = 1;
            carry = 0;
        }
        long pairs = (take - t) / 2;
        const uint32_t *wp = w + t;
        float *op = out + k;
        for (long e = 0; e < pairs; e++)
            op[e] = draw(wp[2 * e], wp[2 * e + 1], threshold, scale);
        k += pairs;
        t += 2 * pairs;
        if (t < take) {
            hi = w[t];
            carry = 1;
        }
        next += take;
        left -= (int32_t)take;
    }
    memcpy(state + 8, &left, 4);
    memcpy(state + 16, &next, 8);
    for (int i = 0; i < MT_N; i++) {
        uint64_t v = s[i];
        memcpy(state + 24 + 8 * i, &v, 8);
    }
    return 0;
}
