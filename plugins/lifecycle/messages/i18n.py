"""The words of the public consent pages (the preference centre, unsubscribe, signup and double
opt-in pages, and the confirmation email) in each language we write them in, and the choice of
language for one request.

The language is, in order: an explicit ``?lang=`` (a supported language only), the contact's
``locale`` from the CRM when the page knows the contact (``de-DE``, ``fr_FR``, ``pt-BR``: the
language without its region), the browser's ``Accept-Language`` (by q-value), then English. An
unknown or unreadable value is passed over, never an error. Program and topic labels, form labels
and consent texts are the operator's words and are shown as configured.

Every catalogue has exactly the English keys with the same ``{placeholders}`` (a test checks).
"""

from __future__ import annotations

import re
import string

DEFAULT = "en"
MAX_HEADER = 512  # an Accept-Language longer than this is read only this far
MAX_RANGES = 20

EN = {
    # links
    "link_invalid_title": "Link not valid",
    "unsubscribe_link_invalid": "This unsubscribe link is not valid. Use the link from the message.",
    "form_too_large_title": "Form too large",
    "form_too_large": "The form sent was too large.",
    # the preference centre
    "preferences_title": "Your subscription preferences",
    "preferences_saved": "Your preferences are saved. They apply from our next send.",
    "one_click_topic": "Unsubscribe from “{topic}” messages at once:",
    "one_click_channel": "Unsubscribe from all marketing {channel} messages at once:",
    "unsubscribe_button": "Unsubscribe",
    "choose": "Or choose what you get from us:",
    "topics_legend": "Topics",
    "channels_legend": "Channels",
    "always_sent": "Always sent: we must tell you.",
    "channel_choice": "Marketing by {channel}",
    "save_button": "Save preferences",
    "unsubscribed_title": "You are unsubscribed",
    "unsubscribed_topic": "You will get no more “{topic}” messages.",
    "unsubscribed_channel": "You will get no more marketing {channel} messages.",
    "channel_email": "email",
    "channel_sms": "SMS",
    "channel_whatsapp": "WhatsApp",
    # the signup form and double opt-in
    "form_not_found_title": "Form not found",
    "form_not_found": "There is no signup form with that name.",
    "email_label": "Email address",
    "subscribe_button": "Subscribe",
    "form_changed": "This form has changed since it was loaded. Please reload it and try again.",
    "consent_required": "Tick the box to agree, or you cannot be subscribed.",
    "email_invalid": "Enter a valid email address, such as name@example.com.",
    "rate_limited": "Too many requests. Please try again later.",
    "pending_title": "Check your inbox",
    "pending": (
        "If the address can receive our emails, a message with a confirmation link is on its way. "
        "You are subscribed once you use that link."
    ),
    "link_expired_title": "Link expired",
    "link_expired": "This confirmation link has expired. Subscribe again to get a new one.",
    "confirm_link_invalid": "This confirmation link is not valid. Use the link from the email.",
    "confirm_title": "Confirm your subscription",
    "confirm_prompt": "Press the button to confirm your subscription.",
    "confirm_button": "Confirm my subscription",
    "link_used_title": "Link already used",
    "link_used": "This confirmation link has already been used.",
    "confirmed_title": "You are subscribed",
    "confirmed": "Thank you: your subscription is confirmed.",
    # the confirmation email
    "email_subject": "Confirm your subscription to {brand}",
    "email_intro": "Please confirm that you want to receive emails from {brand}.",
    "email_agreed": "You agreed to: {consent}",
    "email_confirm": "Confirm",
    "email_ignore": "If you did not ask for this, ignore this email: nothing will be sent to you.",
}

DE = {
    "link_invalid_title": "Link ungültig",
    "unsubscribe_link_invalid": "Dieser Abmeldelink ist ungültig. Bitte verwenden Sie den Link aus der Nachricht.",
    "form_too_large_title": "Formular zu groß",
    "form_too_large": "Das gesendete Formular war zu groß.",
    "preferences_title": "Ihre Abonnement-Einstellungen",
    "preferences_saved": "Ihre Einstellungen sind gespeichert. Sie gelten ab unserem nächsten Versand.",
    "one_click_topic": "Sofort von Nachrichten zu „{topic}“ abmelden:",
    "one_click_channel": "Sofort von allen Marketing-Nachrichten per {channel} abmelden:",
    "unsubscribe_button": "Abmelden",
    "choose": "Oder wählen Sie, was Sie von uns erhalten:",
    "topics_legend": "Themen",
    "channels_legend": "Kanäle",
    "always_sent": "Wird immer gesendet: Wir sind verpflichtet, Sie zu informieren.",
    "channel_choice": "Marketing per {channel}",
    "save_button": "Einstellungen speichern",
    "unsubscribed_title": "Sie sind abgemeldet",
    "unsubscribed_topic": "Sie erhalten keine Nachrichten zu „{topic}“ mehr.",
    "unsubscribed_channel": "Sie erhalten keine Marketing-Nachrichten per {channel} mehr.",
    "channel_email": "E-Mail",
    "channel_sms": "SMS",
    "channel_whatsapp": "WhatsApp",
    "form_not_found_title": "Formular nicht gefunden",
    "form_not_found": "Es gibt kein Anmeldeformular mit diesem Namen.",
    "email_label": "E-Mail-Adresse",
    "subscribe_button": "Abonnieren",
    "form_changed": (
        "Dieses Formular wurde geändert, seit es geladen wurde. "
        "Bitte laden Sie es neu und versuchen Sie es noch einmal."
    ),
    "consent_required": "Setzen Sie das Häkchen, um zuzustimmen – sonst können wir Sie nicht anmelden.",
    "email_invalid": "Geben Sie eine gültige E-Mail-Adresse ein, zum Beispiel name@example.com.",
    "rate_limited": "Zu viele Anfragen. Bitte versuchen Sie es später noch einmal.",
    "pending_title": "Bitte prüfen Sie Ihr Postfach",
    "pending": (
        "Wenn die Adresse unsere E-Mails empfangen kann, ist eine Nachricht mit einem Bestätigungslink "
        "unterwegs. Sie sind angemeldet, sobald Sie diesen Link verwenden."
    ),
    "link_expired_title": "Link abgelaufen",
    "link_expired": "Dieser Bestätigungslink ist abgelaufen. Melden Sie sich erneut an, um einen neuen zu erhalten.",
    "confirm_link_invalid": "Dieser Bestätigungslink ist ungültig. Bitte verwenden Sie den Link aus der E-Mail.",
    "confirm_title": "Bestätigen Sie Ihr Abonnement",
    "confirm_prompt": "Klicken Sie auf die Schaltfläche, um Ihr Abonnement zu bestätigen.",
    "confirm_button": "Mein Abonnement bestätigen",
    "link_used_title": "Link bereits verwendet",
    "link_used": "Dieser Bestätigungslink wurde bereits verwendet.",
    "confirmed_title": "Sie sind angemeldet",
    "confirmed": "Vielen Dank: Ihr Abonnement ist bestätigt.",
    "email_subject": "Bestätigen Sie Ihr Abonnement bei {brand}",
    "email_intro": "Bitte bestätigen Sie, dass Sie E-Mails von {brand} erhalten möchten.",
    "email_agreed": "Sie haben zugestimmt: {consent}",
    "email_confirm": "Bestätigen",
    "email_ignore": "Wenn Sie dies nicht angefordert haben, ignorieren Sie diese E-Mail: Wir senden Ihnen nichts.",
}

FR = {
    "link_invalid_title": "Lien non valide",
    "unsubscribe_link_invalid": (
        "Ce lien de désinscription n’est pas valide. Utilisez le lien figurant dans le message."
    ),
    "form_too_large_title": "Formulaire trop volumineux",
    "form_too_large": "Le formulaire envoyé était trop volumineux.",
    "preferences_title": "Vos préférences d’abonnement",
    "preferences_saved": "Vos préférences sont enregistrées. Elles s’appliquent dès notre prochain envoi.",
    "one_click_topic": "Vous désabonner tout de suite des messages « {topic} » :",
    "one_click_channel": "Vous désabonner tout de suite de tous les messages marketing par {channel} :",
    "unsubscribe_button": "Se désabonner",
    "choose": "Ou choisissez ce que vous recevez de notre part :",
    "topics_legend": "Thèmes",
    "channels_legend": "Canaux",
    "always_sent": "Toujours envoyé : nous sommes tenus de vous en informer.",
    "channel_choice": "Marketing par {channel}",
    "save_button": "Enregistrer mes préférences",
    "unsubscribed_title": "Désinscription enregistrée",
    "unsubscribed_topic": "Vous ne recevrez plus de messages « {topic} ».",
    "unsubscribed_channel": "Vous ne recevrez plus de messages marketing par {channel}.",
    "channel_email": "e-mail",
    "channel_sms": "SMS",
    "channel_whatsapp": "WhatsApp",
    "form_not_found_title": "Formulaire introuvable",
    "form_not_found": "Aucun formulaire d’inscription ne porte ce nom.",
    "email_label": "Adresse e-mail",
    "subscribe_button": "S’abonner",
    "form_changed": "Ce formulaire a changé depuis son chargement. Veuillez le recharger et réessayer.",
    "consent_required": "Cochez la case pour donner votre accord, sans quoi nous ne pouvons pas vous abonner.",
    "email_invalid": "Saisissez une adresse e-mail valide, par exemple name@example.com.",
    "rate_limited": "Trop de demandes. Veuillez réessayer plus tard.",
    "pending_title": "Consultez votre boîte de réception",
    "pending": (
        "Si cette adresse peut recevoir nos e-mails, un message contenant un lien de confirmation est en "
        "route. Votre abonnement prend effet dès que vous utilisez ce lien."
    ),
    "link_expired_title": "Lien expiré",
    "link_expired": "Ce lien de confirmation a expiré. Abonnez-vous à nouveau pour en recevoir un nouveau.",
    "confirm_link_invalid": "Ce lien de confirmation n’est pas valide. Utilisez le lien figurant dans l’e-mail.",
    "confirm_title": "Confirmez votre abonnement",
    "confirm_prompt": "Appuyez sur le bouton pour confirmer votre abonnement.",
    "confirm_button": "Confirmer mon abonnement",
    "link_used_title": "Lien déjà utilisé",
    "link_used": "Ce lien de confirmation a déjà été utilisé.",
    "confirmed_title": "Abonnement confirmé",
    "confirmed": "Merci : votre abonnement est confirmé.",
    "email_subject": "Confirmez votre abonnement à {brand}",
    "email_intro": "Veuillez confirmer que vous souhaitez recevoir des e-mails de {brand}.",
    "email_agreed": "Vous avez accepté : {consent}",
    "email_confirm": "Confirmer",
    "email_ignore": (
        "Si vous n’êtes pas à l’origine de cette demande, ignorez cet e-mail : nous ne vous enverrons rien."
    ),
}

ES = {
    "link_invalid_title": "Enlace no válido",
    "unsubscribe_link_invalid": "Este enlace para darse de baja no es válido. Utilice el enlace del mensaje.",
    "form_too_large_title": "Formulario demasiado grande",
    "form_too_large": "El formulario enviado era demasiado grande.",
    "preferences_title": "Sus preferencias de suscripción",
    "preferences_saved": "Sus preferencias se han guardado. Se aplicarán a partir de nuestro próximo envío.",
    "one_click_topic": "Darse de baja ahora de los mensajes «{topic}»:",
    "one_click_channel": "Darse de baja ahora de todos los mensajes de marketing por {channel}:",
    "unsubscribe_button": "Darse de baja",
    "choose": "O elija qué desea recibir de nosotros:",
    "topics_legend": "Temas",
    "channels_legend": "Canales",
    "always_sent": "Se envía siempre: estamos obligados a informarle.",
    "channel_choice": "Marketing por {channel}",
    "save_button": "Guardar preferencias",
    "unsubscribed_title": "Se ha dado de baja",
    "unsubscribed_topic": "No recibirá más mensajes «{topic}».",
    "unsubscribed_channel": "No recibirá más mensajes de marketing por {channel}.",
    "channel_email": "correo electrónico",
    "channel_sms": "SMS",
    "channel_whatsapp": "WhatsApp",
    "form_not_found_title": "Formulario no encontrado",
    "form_not_found": "No existe ningún formulario de suscripción con ese nombre.",
    "email_label": "Correo electrónico",
    "subscribe_button": "Suscribirme",
    "form_changed": "Este formulario ha cambiado desde que se cargó. Vuelva a cargarlo e inténtelo de nuevo.",
    "consent_required": "Marque la casilla para dar su consentimiento; de lo contrario, no podemos suscribirle.",
    "email_invalid": "Introduzca una dirección de correo electrónico válida, como name@example.com.",
    "rate_limited": "Demasiadas solicitudes. Inténtelo de nuevo más tarde.",
    "pending_title": "Revise su bandeja de entrada",
    "pending": (
        "Si la dirección puede recibir nuestros correos, le hemos enviado un mensaje con un enlace de "
        "confirmación. La suscripción será efectiva en cuanto utilice ese enlace."
    ),
    "link_expired_title": "Enlace caducado",
    "link_expired": "Este enlace de confirmación ha caducado. Vuelva a suscribirse para recibir uno nuevo.",
    "confirm_link_invalid": "Este enlace de confirmación no es válido. Utilice el enlace del correo.",
    "confirm_title": "Confirme su suscripción",
    "confirm_prompt": "Pulse el botón para confirmar su suscripción.",
    "confirm_button": "Confirmar mi suscripción",
    "link_used_title": "Enlace ya utilizado",
    "link_used": "Este enlace de confirmación ya se ha utilizado.",
    "confirmed_title": "Suscripción confirmada",
    "confirmed": "Gracias: su suscripción está confirmada.",
    "email_subject": "Confirme su suscripción a {brand}",
    "email_intro": "Confirme que desea recibir correos electrónicos de {brand}.",
    "email_agreed": "Usted aceptó: {consent}",
    "email_confirm": "Confirmar",
    "email_ignore": "Si no lo ha solicitado, ignore este correo: no le enviaremos nada.",
}

NL = {
    "link_invalid_title": "Link niet geldig",
    "unsubscribe_link_invalid": "Deze afmeldlink is niet geldig. Gebruik de link uit het bericht.",
    "form_too_large_title": "Formulier te groot",
    "form_too_large": "Het verzonden formulier was te groot.",
    "preferences_title": "Uw abonnementsvoorkeuren",
    "preferences_saved": "Uw voorkeuren zijn opgeslagen. Ze gelden vanaf onze volgende verzending.",
    "one_click_topic": "Direct afmelden voor berichten over ‘{topic}’:",
    "one_click_channel": "Direct afmelden voor alle marketingberichten via {channel}:",
    "unsubscribe_button": "Afmelden",
    "choose": "Of kies wat u van ons ontvangt:",
    "topics_legend": "Onderwerpen",
    "channels_legend": "Kanalen",
    "always_sent": "Altijd verstuurd: wij zijn verplicht u dit te laten weten.",
    "channel_choice": "Marketing via {channel}",
    "save_button": "Voorkeuren opslaan",
    "unsubscribed_title": "U bent afgemeld",
    "unsubscribed_topic": "U ontvangt geen berichten over ‘{topic}’ meer.",
    "unsubscribed_channel": "U ontvangt geen marketingberichten via {channel} meer.",
    "channel_email": "e-mail",
    "channel_sms": "sms",
    "channel_whatsapp": "WhatsApp",
    "form_not_found_title": "Formulier niet gevonden",
    "form_not_found": "Er is geen aanmeldformulier met die naam.",
    "email_label": "E-mailadres",
    "subscribe_button": "Aanmelden",
    "form_changed": "Dit formulier is gewijzigd sinds het werd geladen. Laad het opnieuw en probeer het nog eens.",
    "consent_required": "Vink het vakje aan om akkoord te gaan, anders kunnen we u niet aanmelden.",
    "email_invalid": "Vul een geldig e-mailadres in, zoals name@example.com.",
    "rate_limited": "Te veel verzoeken. Probeer het later opnieuw.",
    "pending_title": "Kijk in uw inbox",
    "pending": (
        "Als dit adres onze e-mails kan ontvangen, is er een bericht met een bevestigingslink onderweg. "
        "U bent aangemeld zodra u die link gebruikt."
    ),
    "link_expired_title": "Link verlopen",
    "link_expired": "Deze bevestigingslink is verlopen. Meld u opnieuw aan om een nieuwe te ontvangen.",
    "confirm_link_invalid": "Deze bevestigingslink is niet geldig. Gebruik de link uit de e-mail.",
    "confirm_title": "Bevestig uw aanmelding",
    "confirm_prompt": "Klik op de knop om uw aanmelding te bevestigen.",
    "confirm_button": "Mijn aanmelding bevestigen",
    "link_used_title": "Link al gebruikt",
    "link_used": "Deze bevestigingslink is al gebruikt.",
    "confirmed_title": "U bent aangemeld",
    "confirmed": "Bedankt: uw aanmelding is bevestigd.",
    "email_subject": "Bevestig uw aanmelding bij {brand}",
    "email_intro": "Bevestig dat u e-mails van {brand} wilt ontvangen.",
    "email_agreed": "U ging akkoord met: {consent}",
    "email_confirm": "Bevestigen",
    "email_ignore": "Heeft u hier niet om gevraagd? Negeer dan deze e-mail: u ontvangt niets van ons.",
}

IT = {
    "link_invalid_title": "Link non valido",
    "unsubscribe_link_invalid": "Questo link di disiscrizione non è valido. Utilizzi il link presente nel messaggio.",
    "form_too_large_title": "Modulo troppo grande",
    "form_too_large": "Il modulo inviato era troppo grande.",
    "preferences_title": "Preferenze di iscrizione",
    "preferences_saved": "Le preferenze sono state salvate. Saranno applicate dal nostro prossimo invio.",
    "one_click_topic": "Disiscrizione immediata dai messaggi «{topic}»:",
    "one_click_channel": "Disiscrizione immediata da tutti i messaggi di marketing via {channel}:",
    "unsubscribe_button": "Annulla iscrizione",
    "choose": "Oppure scelga cosa ricevere da noi:",
    "topics_legend": "Argomenti",
    "channels_legend": "Canali",
    "always_sent": "Inviato sempre: siamo tenuti a informarla.",
    "channel_choice": "Marketing via {channel}",
    "save_button": "Salva preferenze",
    "unsubscribed_title": "Iscrizione annullata",
    "unsubscribed_topic": "Non riceverà più messaggi «{topic}».",
    "unsubscribed_channel": "Non riceverà più messaggi di marketing via {channel}.",
    "channel_email": "email",
    "channel_sms": "SMS",
    "channel_whatsapp": "WhatsApp",
    "form_not_found_title": "Modulo non trovato",
    "form_not_found": "Non esiste alcun modulo di iscrizione con questo nome.",
    "email_label": "Indirizzo email",
    "subscribe_button": "Iscriviti",
    "form_changed": "Questo modulo è cambiato dopo il caricamento. Ricarichi la pagina e riprovi.",
    "consent_required": "Selezioni la casella per dare il consenso, altrimenti non possiamo iscriverla.",
    "email_invalid": "Inserisca un indirizzo email valido, ad esempio name@example.com.",
    "rate_limited": "Troppe richieste. Riprovi più tardi.",
    "pending_title": "Controlli la sua casella di posta",
    "pending": (
        "Se l’indirizzo può ricevere le nostre email, è in arrivo un messaggio con un link di conferma. "
        "L’iscrizione sarà attiva non appena utilizzerà quel link."
    ),
    "link_expired_title": "Link scaduto",
    "link_expired": "Questo link di conferma è scaduto. Si iscriva di nuovo per riceverne uno nuovo.",
    "confirm_link_invalid": "Questo link di conferma non è valido. Utilizzi il link presente nell’email.",
    "confirm_title": "Confermi la sua iscrizione",
    "confirm_prompt": "Prema il pulsante per confermare la sua iscrizione.",
    "confirm_button": "Conferma la mia iscrizione",
    "link_used_title": "Link già utilizzato",
    "link_used": "Questo link di conferma è già stato utilizzato.",
    "confirmed_title": "Iscrizione confermata",
    "confirmed": "Grazie: la sua iscrizione è confermata.",
    "email_subject": "Confermi la sua iscrizione a {brand}",
    "email_intro": "Confermi di voler ricevere email da {brand}.",
    "email_agreed": "Ha accettato: {consent}",
    "email_confirm": "Conferma",
    "email_ignore": "Se non ha richiesto questa iscrizione, ignori questa email: non le invieremo nulla.",
}

PT = {  # Brazilian Portuguese (the CRM's pt-BR contacts); pt-PT readers understand it
    "link_invalid_title": "Link inválido",
    "unsubscribe_link_invalid": "Este link de cancelamento de inscrição não é válido. Use o link da mensagem.",
    "form_too_large_title": "Formulário grande demais",
    "form_too_large": "O formulário enviado era grande demais.",
    "preferences_title": "Suas preferências de inscrição",
    "preferences_saved": "Suas preferências foram salvas. Elas valem a partir do nosso próximo envio.",
    "one_click_topic": "Cancelar agora a inscrição nas mensagens “{topic}”:",
    "one_click_channel": "Cancelar agora a inscrição em todas as mensagens de marketing por {channel}:",
    "unsubscribe_button": "Cancelar inscrição",
    "choose": "Ou escolha o que você recebe de nós:",
    "topics_legend": "Assuntos",
    "channels_legend": "Canais",
    "always_sent": "Sempre enviado: somos obrigados a informar você.",
    "channel_choice": "Marketing por {channel}",
    "save_button": "Salvar preferências",
    "unsubscribed_title": "Inscrição cancelada",
    "unsubscribed_topic": "Você não receberá mais mensagens “{topic}”.",
    "unsubscribed_channel": "Você não receberá mais mensagens de marketing por {channel}.",
    "channel_email": "e-mail",
    "channel_sms": "SMS",
    "channel_whatsapp": "WhatsApp",
    "form_not_found_title": "Formulário não encontrado",
    "form_not_found": "Não existe formulário de inscrição com esse nome.",
    "email_label": "Endereço de e-mail",
    "subscribe_button": "Inscrever-me",
    "form_changed": "Este formulário mudou desde que foi carregado. Recarregue a página e tente de novo.",
    "consent_required": "Marque a caixa para concordar; caso contrário, não podemos inscrever você.",
    "email_invalid": "Informe um endereço de e-mail válido, como name@example.com.",
    "rate_limited": "Muitas solicitações. Tente novamente mais tarde.",
    "pending_title": "Confira sua caixa de entrada",
    "pending": (
        "Se o endereço puder receber nossos e-mails, uma mensagem com um link de confirmação está a caminho. "
        "Sua inscrição vale assim que você usar esse link."
    ),
    "link_expired_title": "Link expirado",
    "link_expired": "Este link de confirmação expirou. Inscreva-se novamente para receber um novo.",
    "confirm_link_invalid": "Este link de confirmação não é válido. Use o link do e-mail.",
    "confirm_title": "Confirme sua inscrição",
    "confirm_prompt": "Pressione o botão para confirmar sua inscrição.",
    "confirm_button": "Confirmar minha inscrição",
    "link_used_title": "Link já utilizado",
    "link_used": "Este link de confirmação já foi utilizado.",
    "confirmed_title": "Inscrição confirmada",
    "confirmed": "Obrigado: sua inscrição está confirmada.",
    "email_subject": "Confirme sua inscrição em {brand}",
    "email_intro": "Confirme que você deseja receber e-mails de {brand}.",
    "email_agreed": "Você concordou com: {consent}",
    "email_confirm": "Confirmar",
    "email_ignore": "Se você não pediu isso, ignore este e-mail: nada será enviado a você.",
}

JA = {
    "link_invalid_title": "無効なリンクです",
    "unsubscribe_link_invalid": "この配信停止リンクは無効です。メッセージに記載のリンクをご利用ください。",
    "form_too_large_title": "フォームが大きすぎます",
    "form_too_large": "送信されたフォームが大きすぎます。",
    "preferences_title": "配信設定",
    "preferences_saved": "設定を保存しました。次回の配信から適用されます。",
    "one_click_topic": "「{topic}」のメッセージの配信を今すぐ停止する：",
    "one_click_channel": "{channel}によるマーケティングメッセージの配信をすべて今すぐ停止する：",
    "unsubscribe_button": "配信停止",
    "choose": "または、受け取る内容を選んでください：",
    "topics_legend": "トピック",
    "channels_legend": "チャネル",
    "always_sent": "必ずお送りします：お知らせする義務があるためです。",
    "channel_choice": "{channel}によるマーケティング",
    "save_button": "設定を保存",
    "unsubscribed_title": "配信を停止しました",
    "unsubscribed_topic": "今後「{topic}」のメッセージはお送りしません。",
    "unsubscribed_channel": "今後{channel}によるマーケティングメッセージはお送りしません。",
    "channel_email": "メール",
    "channel_sms": "SMS",
    "channel_whatsapp": "WhatsApp",
    "form_not_found_title": "フォームが見つかりません",
    "form_not_found": "その名前の登録フォームはありません。",
    "email_label": "メールアドレス",
    "subscribe_button": "登録する",
    "form_changed": "このフォームは読み込み後に変更されました。再読み込みしてもう一度お試しください。",
    "consent_required": "同意のチェックボックスをオンにしてください。オンにしないと登録できません。",
    "email_invalid": "有効なメールアドレスを入力してください（例：name@example.com）。",
    "rate_limited": "リクエストが多すぎます。しばらくしてからもう一度お試しください。",
    "pending_title": "受信トレイをご確認ください",
    "pending": (
        "このアドレスが当社のメールを受信できる場合、確認リンク付きのメッセージをお送りしました。"
        "そのリンクを使うと登録が完了します。"
    ),
    "link_expired_title": "リンクの有効期限切れ",
    "link_expired": "この確認リンクは有効期限が切れています。新しいリンクを受け取るには、もう一度登録してください。",
    "confirm_link_invalid": "この確認リンクは無効です。メールに記載のリンクをご利用ください。",
    "confirm_title": "登録の確認",
    "confirm_prompt": "ボタンを押して登録を確定してください。",
    "confirm_button": "登録を確定する",
    "link_used_title": "使用済みのリンクです",
    "link_used": "この確認リンクはすでに使用されています。",
    "confirmed_title": "登録が完了しました",
    "confirmed": "ありがとうございます。登録が確認されました。",
    "email_subject": "{brand}への登録のご確認",
    "email_intro": "{brand}からのメールの受信をご希望かどうか、ご確認ください。",
    "email_agreed": "同意いただいた内容：{consent}",
    "email_confirm": "確認",
    "email_ignore": "お心当たりがない場合は、このメールを無視してください。今後メールが送られることはありません。",
}

CATALOGUES: dict[str, dict[str, str]] = {
    "en": EN,
    "de": DE,
    "fr": FR,
    "es": ES,
    "nl": NL,
    "it": IT,
    "pt": PT,
    "ja": JA,
}
"""Each language's words, by base language (ISO 639-1)."""

_TAG = re.compile(r"[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*")
_RANGE = re.compile(r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9](?:\.[0-9]{0,3})?))?\s*$")


def language_of(locale: object) -> str | None:
    """The supported language of a locale or language tag (``de-DE``, ``fr_FR``, ``pt-BR``,
    ``en_US.UTF-8``, ``DE``: the language without its region), None when it names none we have."""
    if not isinstance(locale, str):
        return None
    match = _TAG.match(locale.strip())
    if match is None:
        return None
    language = re.split(r"[-_]", match.group(0), maxsplit=1)[0].lower()
    return language if language in CATALOGUES else None


def from_accept_language(header: str | None) -> str | None:
    """The supported language a browser prefers most (``Accept-Language``, RFC 9110: highest q
    first, the header's order among equals; ``q=0`` means not wanted), None when it names none we
    have. Unreadable ranges are skipped."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header[:MAX_HEADER].split(",")[:MAX_RANGES]):
        match = _RANGE.match(part)
        if match is None:
            continue
        tag, q = match.group(1), match.group(2)
        weight = float(q) if q is not None else 1.0
        language = language_of(tag) if tag != "*" else None
        if weight <= 0 or weight > 1 or language is None:
            continue
        ranked.append((-weight, position, language))
    return min(ranked)[2] if ranked else None


def negotiate(*, override: str | None = None, contact_locale: object = None, accept_language: str | None = None) -> str:
    """The language of one page: ``?lang=``, the contact's locale, ``Accept-Language``, English —
    the first that names a language we have."""
    return language_of(override) or language_of(contact_locale) or from_accept_language(accept_language) or DEFAULT


def text(language: str, key: str, **values: str) -> str:
    """The words ``key`` in ``language`` (English when the language is not ours), with ``values``
    filled in. Values are put in as they are: escape the result where it goes into HTML."""
    words = CATALOGUES.get(language, EN).get(key) or EN[key]
    return words.format(**values) if values else words


def channel_name(language: str, channel: str) -> str:
    """A channel's name in ``language`` (the channel's own name when the catalogue has none)."""
    key = f"channel_{channel}"
    return text(language, key) if key in EN else channel


def placeholders(words: str) -> set[str]:
    """The ``{names}`` a catalogue entry fills in."""
    return {name for _, name, _, _ in string.Formatter().parse(words) if name is not None}
