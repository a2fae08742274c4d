using System.Buffers;
using System.Globalization;
using System.Text;
using GpuExecutor.Containers;

namespace GpuExecutor.Stages;

/// <summary>
/// A reply of the stage server: the nonce of the request and its number (exit code, process
/// count), and how many output bytes of the chunk it came in went out before it.
/// </summary>
public readonly record struct ServerReply(string Nonce, int Value)
{
    public int OutputOffset { get; init; }
}

/// <summary>
/// Passes the container's stdout through byte for byte, taking out the stage server's replies
/// ("\x1egpu-executor:NONCE:NUMBER\n") to requests this executor made. A reply may arrive split
/// across any number of chunks. Bytes that only look like a reply, and replies to other
/// executors' nonces, are output like any other bytes.
/// </summary>
public sealed class ServerReplyScanner(Func<string, bool> isOurs)
{
    private const int MaximumNonceLength = 64;
    private const int MaximumDigits = 10;

    private readonly byte[] _prefix = StageServer.ReplyPrefix.ToArray();
    private readonly List<byte> _held = [];
    private int _nonceStart = -1;
    private int _digitsStart = -1;

    /// <summary>Appends the output part of <paramref name="chunk"/> to <paramref name="output"/> and our replies to <paramref name="replies"/>.</summary>
    public void Feed(ReadOnlySpan<byte> chunk, ArrayBufferWriter<byte> output, List<ServerReply> replies)
    {
        var index = 0;
        while (index < chunk.Length)
        {
            if (_held.Count == 0)
            {
                // Fast path: plain output up to the next byte that could start a reply.
                var start = chunk[index..].IndexOf(_prefix[0]);
                if (start < 0)
                {
                    output.Write(chunk[index..]);
                    return;
                }
                output.Write(chunk.Slice(index, start));
                index += start;
            }

            if (Accept(chunk[index], output, replies))
                index++;
        }
    }

    /// <summary>Moves the reply state machine on by one byte; false when the byte must be looked at again.</summary>
    private bool Accept(byte value, ArrayBufferWriter<byte> output, List<ServerReply> replies)
    {
        if (_held.Count < _prefix.Length)
        {
            if (value != _prefix[_held.Count])
                return Release(output);
            _held.Add(value);
            if (_held.Count == _prefix.Length)
                _nonceStart = _held.Count;
            return true;
        }

        if (_digitsStart < 0)
        {
            var nonceLength = _held.Count - _nonceStart;
            if (value == (byte)':' && nonceLength > 0)
            {
                _held.Add(value);
                _digitsStart = _held.Count;
                return true;
            }
            if (!IsNonceCharacter(value) || nonceLength == MaximumNonceLength)
                return Release(output);
            _held.Add(value);
            return true;
        }

        var digits = _held.Count - _digitsStart;
        if (char.IsAsciiDigit((char)value) && digits < MaximumDigits)
        {
            _held.Add(value);
            return true;
        }
        if (value != (byte)'\n' || digits == 0)
            return Release(output);

        var held = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_held);
        var nonce = Encoding.ASCII.GetString(held[_nonceStart..(_digitsStart - 1)]);
        if (!isOurs(nonce))
        {
            _held.Add(value);
            Release(output);
            return true;
        }
        replies.Add(new ServerReply(nonce, int.Parse(Encoding.ASCII.GetString(held[_digitsStart..]), NumberStyles.None, CultureInfo.InvariantCulture)) { OutputOffset = output.WrittenCount });
        Reset();
        return true;
    }

    private static bool IsNonceCharacter(byte value) => char.IsAsciiHexDigitLower((char)value) || char.IsAsciiDigit((char)value);

    /// <summary>What was held was not one of our replies: it is output after all.</summary>
    private bool Release(ArrayBufferWriter<byte> output)
    {
        output.Write(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_held));
        Reset();
        return false;
    }

    private void Reset()
    {
        _held.Clear();
        _nonceStart = -1;
        _digitsStart = -1;
    }
}
