/* trust_atp.h: the ATP pseudo-currency of the research system's Web4 layer,
 * reproduced exactly (reference/sage.md sections 5 and 8).
 *
 *   scarcity = max(0, (util - 0.8) / (1 - 0.8)) * (3 - 1)
 *   cost     = int(100 * (1 + scarcity) * (1 + 0.5 * reputation))
 *   reward   = q >= 0.8        : int(cost * 1.5)        (refund + 50% bonus)
 *              0.5 <= q < 0.8  : int(cost * (0.5 + 0.5 * (q - 0.5) / 0.3))
 *              q < 0.5         : 0
 *
 * util is the load of the worker hosting the expert in [0, 1]; reputation is
 * the expert's trust in the current context.  The divisor is written
 * (1 - 0.8), not 0.2, so that util 1.0 gives scarcity exactly 2 in double
 * arithmetic (cost 300, not 299).
 */
#ifndef TM_TRUST_ATP_H
#define TM_TRUST_ATP_H

#include <stdint.h>

#define TRUST_ATP_BASE 100.0

double trust_atp_scarcity(double util);
int32_t trust_atp_cost(double util, double reputation);
int32_t trust_atp_reward(int64_t cost, double q);

#endif
