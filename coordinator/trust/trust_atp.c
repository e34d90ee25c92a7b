/* trust_atp.c: ATP cost and reward (formulas in trust_atp.h). */
#include "trust_atp.h"

double trust_atp_scarcity(double util)
{
    double s = (util - 0.8) / (1.0 - 0.8);
    return (s > 0 ? s : 0) * (3.0 - 1.0);
}

int32_t trust_atp_cost(double util, double reputation)
{
    /* reputation comes from the database: outside [0, 1] (or NaN) it must
     * not make a cost negative or overflow the cast */
    if (!(reputation >= 0.0)) reputation = 0.0;
    if (reputation > 1.0) reputation = 1.0;
    double c = TRUST_ATP_BASE * (1.0 + trust_atp_scarcity(util)) * (1.0 + reputation * 0.5);
    return c < (double)INT32_MAX ? (int32_t)c : INT32_MAX;
}

int32_t trust_atp_reward(int64_t cost, double q)
{
    double r = q >= 0.8 ? (double)cost * 1.5 : q >= 0.5 ? (double)cost * (0.5 + 0.5 * (q - 0.5) / 0.3) : 0.0;
    return r <= 0.0 ? 0 : r < (double)INT32_MAX ? (int32_t)r : INT32_MAX;
}
