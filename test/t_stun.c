#include "candy.h"
#include "test.h"

void test_stun(void)
{
}
