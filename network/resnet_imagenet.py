"""ResNet-18/34 for ImageNet-20 (224x224, 20 classes), torchvision's definition, trained from scratch."""
import torch.nn as nn
import torchvision


def _resnet(builder, num_classes, in_channels):
    model = builder(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def resnet18(num_classes=20, in_channels=3):
    return _resnet(torchvision.models.resnet18, num_classes, in_channels)


def resnet34(num_classes=20, in_channels=3):
    return _resnet(torchvision.models.resnet34, num_classes, in_channels)
