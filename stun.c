/* stun.c */
#include "candy.h"
