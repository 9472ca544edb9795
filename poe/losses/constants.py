"""The paper's two loss constants, named once: every loss and every call site takes them from here."""

TEMPERATURE = 4.0  # T: the softening temperature of L_soft (experts, CKD, the library student's KD) and of SD/UHC
ALPHA = 0.3        # α: the weight of L_scale in the experts' loss L_soft + α·L_scale
