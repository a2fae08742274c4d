using System.Globalization;

namespace GpuExecutor.Configuration;

/// <summary>Parses sizes the way Docker's CLI writes them: "512m", "16g", "1.5g", or plain bytes.</summary>
public static class ByteSize
{
    public static bool TryParse(string text, out long bytes)
    {
        bytes = 0;
        var trimmed = text.Trim().ToLowerInvariant();
        if (trimmed.Length == 0)
            return false;
        if (trimmed.EndsWith('b'))
            trimmed = trimmed[..^1];

        long multiplier = 1;
        if (trimmed.Length > 0 && char.IsLetter(trimmed[^1]))
        {
            multiplier = trimmed[^1] switch
            {
                'k' => 1L << 10,
                'm' => 1L << 20,
                'g' => 1L << 30,
                't' => 1L << 40,
                _ => 0,
            };
            if (multiplier == 0)
                return false;
            trimmed = trimmed[..^1];
        }

        if (!double.TryParse(trimmed, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var value) || value <= 0)
            return false;
        var result = value * multiplier;
        if (result > long.MaxValue)
            return false;
        bytes = (long)result;
        return bytes > 0;
    }
}
