"""Proposal generators (PROPOSAL_GENERATORS) and RPN heads (RPN_HEADS)."""

from framework.modeling.proposal_generator.rpn import RPN
from framework.modeling.proposal_generator.rpn_head import StandardRPNHead

__all__ = ["RPN", "StandardRPNHead"]
