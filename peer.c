/* peer.c */
#include "candy.h"
