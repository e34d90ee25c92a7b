/* trust_atp.c: ATP cost and reward (formulas in trust_atp.h). */
#include "trust_atp.h"

double trust_atp_scarcity(double util)
{
    double s = (util - 0.8) / (1.0 - 0.8);
    return (s > 0 ? s : 0) * (3.0 - 1.0);
}

int32_t trust_atp_cost(double util, double reputation)
{
    return (int32_t)(TRUST_ATP_BASE * (1.0 + trust_atp_scarcity(util)) * (1.0 + reputation * 0.5));
}

int32_t trust_atp_reward(int64_t cost, double q)
{
    if (q >= 0.8) return (int32_t)((double)cost * 1.5);
    if (q >= 0.5) return (int32_t)((double)cost * (0.5 + 0.5 * (q - 0.5) / 0.3));
    return 0;
}
